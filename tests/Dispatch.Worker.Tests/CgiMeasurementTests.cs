using System.Diagnostics;
using System.Net;
using Dispatch.Wire.Payloads;
using Dispatch.Worker.Http;
using Dispatch.Worker.Tests.Support;
using Xunit.Abstractions;

namespace Dispatch.Worker.Tests;

/// <summary>Runs its classes alone, after the parallel ones: their numbers measure CGI, not the neighbours.</summary>
[CollectionDefinition(Name, DisableParallelization = true)]
public sealed class MeasurementCollection
{
    public const string Name = "Measurements (not parallel)";
}

/// <summary>CGI streaming memory and spawn latency, measured with nothing else running in the test process.</summary>
[Collection(MeasurementCollection.Name)]
public sealed class CgiMeasurementTests(ITestOutputHelper output) : IAsyncLifetime
{
    private readonly TempDir _dir = new();
    private Harness _harness = null!;
    private HttpClient _client = null!;

    public async Task InitializeAsync()
    {
        _dir.Write("site/index.html", "<h1>home</h1>");
        Script("cgi/tiny.sh", "#!/bin/sh\nprintf 'Content-Type: text/plain\\n\\nok'\n");
        Script("cgi/big.sh", "#!/bin/sh\necho 'Content-Type: application/octet-stream'\necho\nexec head -c 209715200 /dev/zero\n");
        _harness = await Harness.StartAsync(
            Harness.Vhost("a.localhost", _dir.Combine("site")) with { Cgi = [new CgiRoute("/cgi-bin/", _dir.Combine("cgi"))] });
        _client = _harness.CreateClient();
    }

    public async Task DisposeAsync()
    {
        _client.Dispose();
        await _harness.DisposeAsync();
        _dir.Dispose();
    }

    [Fact]
    public async Task Huge_output_is_streamed_with_bounded_memory()
    {
        const long Expected = 200L * 1024 * 1024;
        GC.Collect();
        GC.WaitForPendingFinalizers();
        var managedBefore = GC.GetTotalMemory(forceFullCollection: true);
        using var self = Process.GetCurrentProcess();
        var rssBefore = self.WorkingSet64;
        long peakManaged = managedBefore, peakRss = rssBefore;
        using var sampling = new CancellationTokenSource();
        var sampler = Task.Run(async () =>
        {
            while (!sampling.IsCancellationRequested)
            {
                peakManaged = Math.Max(peakManaged, GC.GetTotalMemory(false));
                self.Refresh();
                peakRss = Math.Max(peakRss, self.WorkingSet64);
                await Task.Delay(20, CancellationToken.None);
            }
        });

        var watch = Stopwatch.StartNew();
        using var response = await _client.GetAsync(new Uri("http://a.localhost/cgi-bin/big.sh"), HttpCompletionOption.ResponseHeadersRead);
        var headers = watch.Elapsed;
        Assert.Equal(HttpStatusCode.OK, response.StatusCode);
        Assert.Null(response.Content.Headers.ContentLength);
        Assert.True(response.Headers.TransferEncodingChunked);
        await using var stream = await response.Content.ReadAsStreamAsync();
        var buffer = new byte[256 * 1024];
        long total = 0;
        TimeSpan? firstByte = null;
        int n;
        while ((n = await stream.ReadAsync(buffer)) > 0)
        {
            firstByte ??= watch.Elapsed;
            total += n;
        }

        var elapsed = watch.Elapsed;
        await sampling.CancelAsync();
        await sampler;
        Assert.Equal(Expected, total);
        var managedGrowth = peakManaged - managedBefore;
        var rssGrowth = peakRss - rssBefore;
        output.WriteLine(
            $"200 MiB: headers {headers.TotalMilliseconds:F1} ms, first byte {firstByte!.Value.TotalMilliseconds:F1} ms, all {elapsed.TotalMilliseconds:F0} ms " +
            $"({Expected / elapsed.TotalSeconds / (1024 * 1024):F0} MiB/s); managed heap peak growth {managedGrowth / 1024.0 / 1024:F1} MiB, " +
            $"working set peak growth {rssGrowth / 1024.0 / 1024:F1} MiB");
        Assert.True(firstByte < elapsed / 4, "the first bytes must arrive long before the end: streamed, not buffered");
        Assert.True(managedGrowth < 64L * 1024 * 1024, $"managed heap grew by {managedGrowth} bytes");
        Assert.True(rssGrowth < 64L * 1024 * 1024, $"working set grew by {rssGrowth} bytes");
    }

    [Fact]
    public async Task Spawn_to_first_byte_latency_of_a_tiny_script()
    {
        const int Runs = 100;
        for (var i = 0; i < 5; i++)
        {
            using var warm = await _client.GetAsync(new Uri("http://a.localhost/cgi-bin/tiny.sh"));
        }

        var cgi = new List<double>();
        var files = new List<double>();
        for (var i = 0; i < Runs; i++)
        {
            var watch = Stopwatch.StartNew();
            using (var response = await _client.GetAsync(new Uri("http://a.localhost/cgi-bin/tiny.sh"), HttpCompletionOption.ResponseHeadersRead))
            {
                cgi.Add(watch.Elapsed.TotalMilliseconds);
                Assert.Equal("ok", await response.Content.ReadAsStringAsync());
            }

            watch.Restart();
            using (var response = await _client.GetAsync(new Uri("http://a.localhost/index.html"), HttpCompletionOption.ResponseHeadersRead))
            {
                files.Add(watch.Elapsed.TotalMilliseconds);
                await response.Content.ReadAsStringAsync();
            }
        }

        cgi.Sort();
        files.Sort();
        output.WriteLine(
            $"request to first response byte over {Runs} runs (keep-alive, sequential): tiny /bin/sh CGI median {cgi[Runs / 2]:F2} ms, " +
            $"p90 {cgi[Runs * 9 / 10]:F2} ms, min {cgi[0]:F2} ms; static file median {files[Runs / 2]:F2} ms");
        Assert.True(cgi[Runs / 2] < 200, "a tiny CGI script should answer well within 200 ms");
    }

    private void Script(string relative, string content)
    {
        var path = _dir.Write(relative, content);
        File.SetUnixFileMode(path, (UnixFileMode)0x1ed); // 0755
    }
}
