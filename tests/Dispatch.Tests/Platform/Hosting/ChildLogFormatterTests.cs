using Dispatch.Platform.Hosting;
using Serilog.Events;
using Serilog.Parsing;

namespace Dispatch.Tests.Platform.Hosting;

public class ChildLogFormatterTests
{
    private static string Format(string template, params LogEventProperty[] properties)
    {
        var e = new LogEvent(DateTimeOffset.UnixEpoch, LogEventLevel.Information, null, new MessageTemplateParser().Parse(template), properties);
        using var w = new StringWriter();
        new ChildLogFormatter().Format(e, w);
        return w.ToString();
    }

    [Fact]
    public void Properties_survive_the_trip_through_stderr_and_the_text_stays_readable()
    {
        var line = Format(
            "Connection {ConnectionId} from {Client}: {Reason}",
            new LogEventProperty("ConnectionId", new ScalarValue(42UL)),
            new LogEventProperty("Client", new ScalarValue("127.0.0.1:5000")),
            new LogEventProperty("Reason", new ScalarValue("not TLS\nsecond line")));
        Assert.EndsWith("\n", line, StringComparison.Ordinal);
        Assert.Single(line.TrimEnd('\n').Split('\n'));
        Assert.StartsWith("INF Connection 42 from 127.0.0.1:5000: not TLS second line", line, StringComparison.Ordinal);
        var (text, properties) = ChildLogFormatter.Split(line.TrimEnd('\n')[4..]);
        Assert.Equal("Connection 42 from 127.0.0.1:5000: not TLS second line", text);
        Assert.Equal(42L, properties.Single(p => p.Key == "ConnectionId").Value);
        Assert.Equal("127.0.0.1:5000", properties.Single(p => p.Key == "Client").Value);
    }

    [Theory]
    [InlineData("plain line", "plain line", 0)]
    [InlineData("text\u001f{not json", "text {not json", 0)]
    [InlineData("text\u001f[1,2]", "text", 0)]
    [InlineData("text\u001f{\"bad name!\":1,\"ok\":2,\"nested\":{\"x\":1}}", "text", 1)]
    public void A_child_cannot_make_the_master_believe_malformed_properties(string line, string text, int count)
    {
        var (t, properties) = ChildLogFormatter.Split(line);
        Assert.Equal(text, t);
        Assert.Equal(count, properties.Count);
    }

    // Found by fuzzing (fuzz/Dispatch.Fuzz, target childstderr): a compromised child's CR, NEL or U+2028 went into the
    // master's text log as is, so one line of the child's read as two lines of the master's (a forged entry).
    [Theory]
    [InlineData("hi\r[00:00:00 INF] forged", "hi [00:00:00 INF] forged", null)]
    [InlineData("a\u0085b\u2028c\u2029d\u001b[2Je", "a b c d [2Je", null)]
    [InlineData("text\r\u001f{\"Vhost\":\"x\\ny\\u2028z\"}", "text ", "x y z")]
    [InlineData("bad\r\u001f{json", "bad  {json", null)]
    public void A_child_cannot_break_a_line_of_the_masters_log(string line, string text, string? vhost)
    {
        var (t, properties) = ChildLogFormatter.Split(line);
        Assert.Equal(text, t);
        Assert.Equal(vhost, properties.SingleOrDefault(p => p.Key == "Vhost").Value);
    }

    // Found by fuzzing (target childstderr): the master's reader was new StreamReader(stream, Encoding.UTF8), which
    // honours a byte-order mark, so a child that wrote FF FE had the rest of its stderr read as UTF-16 (ten lines
    // became one event; FF FE alone, no event at all).
    [Theory]
    [InlineData(new byte[] { 0xFF, 0xFE, (byte)'a', 0, (byte)'\n', 0, (byte)'b', 0 }, new[] { "\uFFFD\uFFFDa\0", "\0b\0" })]
    [InlineData(new byte[] { 0xFE, 0xFF, 0, (byte)'a', 0, (byte)'\n' }, new[] { "\uFFFD\uFFFD\0a\0" })]
    [InlineData(new byte[] { 0xEF, 0xBB, 0xBF, (byte)'x', (byte)'\n', (byte)'y' }, new[] { "\uFEFFx", "y" })]
    public void The_masters_reader_of_a_childs_stderr_is_UTF8_whatever_the_child_writes_first(byte[] bytes, string[] lines)
    {
        using var reader = ChildLogFormatter.OpenReader(new MemoryStream(bytes));
        var read = new List<string>();
        while (reader.ReadLine() is { } line)
            read.Add(line);
        Assert.Equal(lines, read);
    }
}
