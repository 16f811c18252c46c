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

    // Lines that made the JSON reader throw something other than a JsonException, which Split did not catch: the
    // master's pump of that child's stderr ended on it (issue 13). Each is a line that is not JSON properties: kept
    // whole as text, cleaned (the separator a space, a lone surrogate U+FFFD), no property believed. {HI} and {LO}
    // stand for a lone high and low surrogate (not in the attribute: test discovery serializes its strings).
    [Theory]
    [InlineData("text\u001f{\"Vhost\":\"{HI}\"}", "text {\"Vhost\":\"\uFFFD\"}")] // a lone surrogate in the line itself: ArgumentException
    [InlineData("text\u001f{\"Vhost\":\"a{LO}b\"}", "text {\"Vhost\":\"a\uFFFDb\"}")]
    [InlineData("text\u001f{\"Vhost\":\"\\ud800\"}", "text {\"Vhost\":\"\\ud800\"}")] // escaped in a value: InvalidOperationException
    [InlineData("text\u001f{\"Vhost\":\"\\udc00\\ud800\"}", "text {\"Vhost\":\"\\udc00\\ud800\"}")]
    [InlineData("text\u001f{\"\\ud800\":1}", "text {\"\\ud800\":1}")] // escaped in a name
    public void A_line_the_JSON_reader_throws_on_is_kept_as_text(string line, string text)
    {
        var (t, properties) = ChildLogFormatter.Split(Surrogates(line));
        Assert.Equal(text, t);
        Assert.Empty(properties);
    }

    [Theory]
    [InlineData("a{HI}b", "a\uFFFDb")]
    [InlineData("{LO}", "\uFFFD")]
    [InlineData("x{HI}", "x\uFFFD")]
    [InlineData("{LO}{HI}", "\uFFFD\uFFFD")]
    [InlineData("\U0001D11E{HI}\U0001D11E", "\U0001D11E\uFFFD\U0001D11E")]
    public void A_lone_surrogate_in_the_text_becomes_a_replacement_character_and_a_pair_stays(string line, string text) =>
        Assert.Equal(text, ChildLogFormatter.Split(Surrogates(line)).Text);

    private static string Surrogates(string line) => line.Replace("{HI}", "\ud800", StringComparison.Ordinal).Replace("{LO}", "\udc00", StringComparison.Ordinal);
}
