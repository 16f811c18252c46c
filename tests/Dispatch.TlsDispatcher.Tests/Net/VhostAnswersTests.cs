using Dispatch.TlsDispatcher.Net;

namespace Dispatch.TlsDispatcher.Tests.Net;

public sealed class VhostAnswersTests
{
    [Fact]
    public void Each_answer_counts_for_its_vhost_with_its_body_and_the_time_since_the_accept()
    {
        var answers = new VhostAnswers();
        var now = Environment.TickCount64;
        answers.Record("a.localhost", 301, 0, now);
        answers.Record("a.localhost", 308, 0, now);
        answers.Record("a.localhost", 503, 67, now - 30_000); // waited 30 s for a worker
        answers.Record("b.localhost", 401, 25, now);

        var counts = answers.Snapshot(_ => true).ToDictionary(t => t.Vhost);
        Assert.Equal([0, 0, 2, 0, 1], counts["a.localhost"].Requests);
        Assert.Equal(67, counts["a.localhost"].BytesSent);
        Assert.True(counts["a.localhost"].DurationMicros >= 30_000_000);
        Assert.Equal(1, counts["a.localhost"].Buckets[^1]); // above 10 s
        Assert.Equal([0, 0, 0, 1, 0], counts["b.localhost"].Requests);
        Assert.Equal(25, counts["b.localhost"].BytesSent);
    }

    [Fact]
    public void A_vhost_no_longer_routed_is_forgotten()
    {
        var answers = new VhostAnswers();
        answers.Record("a.localhost", 301, 0, Environment.TickCount64);
        answers.Record("gone.localhost", 503, 67, Environment.TickCount64);

        Assert.Equal(["a.localhost"], answers.Snapshot(v => v == "a.localhost").Select(t => t.Vhost));
        // Routed again (a reload put it back): it starts from nothing.
        Assert.Equal(["a.localhost"], answers.Snapshot(_ => true).Select(t => t.Vhost));
        answers.Record("gone.localhost", 503, 67, Environment.TickCount64);
        Assert.Equal(1, answers.Snapshot(_ => true).Single(t => t.Vhost == "gone.localhost").Total);
    }
}
