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
}
