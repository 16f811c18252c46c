using System.Diagnostics;
using Dispatch.Worker.Http;
using Dispatch.Worker.Tests.Support;
using Xunit.Abstractions;

namespace Dispatch.Worker.Tests;

/// <summary>Measurements, printed and not asserted (shared, noisy machines).</summary>
public sealed class TimingTests(ITestOutputHelper output)
{
    [Fact]
    public async Task StartAsync_and_per_request_time()
    {
        using var dir = new TempDir();
        dir.Write("site/ten.txt", "0123456789");
        var vhost = Harness.Vhost("a.localhost", dir.Combine("site"));

        for (var i = 0; i < 3; i++)
        {
            var watch = Stopwatch.StartNew();
            var server = await WorkerHttpServer.StartAsync([vhost], Serilog.Core.Logger.None, CancellationToken.None);
            var started = watch.Elapsed;
            await server.StopAsync(TimeSpan.FromSeconds(1));
            var stopped = watch.Elapsed - started;
            await server.DisposeAsync();
            output.WriteLine($"StartAsync #{i + 1}: {started.TotalMilliseconds:0.0} ms (StopAsync {stopped.TotalMilliseconds:0.0} ms)");
        }

        await using var harness = await Harness.StartAsync(vhost);
        harness.Dispatcher.ReadInitial = InitialRead.Head;
        var first = Stopwatch.StartNew();
        await using (var raw = await RawConnection.ConnectAsync(harness.Port))
        {
            await raw.SendAsync("GET /ten.txt HTTP/1.1\r\nHost: a.localhost\r\n\r\n");
            Assert.Equal(200, (await raw.ReadResponseAsync()).Status);
            output.WriteLine($"first request on a new connection (connect + hand-over + response): {first.Elapsed.TotalMilliseconds:0.00} ms");

            const int warmup = 500;
            const int count = 3000;
            for (var i = 0; i < warmup; i++)
            {
                await raw.SendAsync("GET /ten.txt HTTP/1.1\r\nHost: a.localhost\r\n\r\n");
                await raw.ReadResponseAsync();
            }

            var watch = Stopwatch.StartNew();
            for (var i = 0; i < count; i++)
            {
                await raw.SendAsync("GET /ten.txt HTTP/1.1\r\nHost: a.localhost\r\n\r\n");
                await raw.ReadResponseAsync();
            }

            output.WriteLine($"keep-alive GET of a 10-byte file, sequential: {watch.Elapsed.TotalMicroseconds / count:0} µs/request (round trip)");
            var serverSide = harness.Sink.AccessEvents
                .Select(e => double.Parse(CollectingSink.Scalar(e, "ElapsedMs")!, System.Globalization.CultureInfo.InvariantCulture))
                .Skip(warmup)
                .Order()
                .ToArray();
            output.WriteLine($"server-side time in the request pipeline (access log ElapsedMs): median {serverSide[serverSide.Length / 2] * 1000:0} µs, p90 {serverSide[serverSide.Length * 9 / 10] * 1000:0} µs");
        }

        var connectionsWatch = Stopwatch.StartNew();
        const int connections = 300;
        for (var i = 0; i < connections; i++)
        {
            await using var raw = await RawConnection.ConnectAsync(harness.Port);
            await raw.SendAsync("GET /ten.txt HTTP/1.1\r\nHost: a.localhost\r\nConnection: close\r\n\r\n");
            await raw.ReadResponseAsync();
        }

        output.WriteLine($"new connection per request (incl. the test's own accept + head read + hand-over): {connectionsWatch.Elapsed.TotalMicroseconds / connections:0} µs/request");
    }
}
