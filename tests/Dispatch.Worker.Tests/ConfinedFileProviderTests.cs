using System.Diagnostics;
using Dispatch.Worker.Http;
using Dispatch.Worker.Tests.Support;
using Microsoft.Extensions.FileProviders;

namespace Dispatch.Worker.Tests;

public sealed class ConfinedFileProviderTests : IDisposable
{
    private const string Secret = "TOP-SECRET-6f1c";
    private static readonly string[] ExpectedRootListing = [".hidden", ".well-known", "absolute-alias.txt", "alias.txt", "index.html", "sub"];
    private readonly TempDir _dir = new();
    private readonly string _root;
    private readonly ConfinedFileProvider _provider;

    public ConfinedFileProviderTests()
    {
        _root = _dir.MakeDirectory("root");
        _dir.Write("secret/secret.txt", Secret);
        _dir.Write("root/index.html", "<h1>home</h1>");
        _dir.Write("root/sub/real.txt", "real");
        _dir.Write("root/.well-known/acme-challenge/token", "acme");
        _dir.Write("root/.git/config", Secret);
        _dir.Write("root/.htaccess", Secret);
        _dir.Write("root/.htpasswd", Secret);
        _dir.Write("root/.env", Secret);
        _dir.Write("root/.hidden", "dotfile");
        _dir.Symlink("root/leak.txt", _dir.Combine("secret/secret.txt"));
        _dir.Symlink("root/leakdir", _dir.Combine("secret"));
        _dir.Symlink("root/relative-leak.txt", "../secret/secret.txt");
        _dir.Symlink("root/alias.txt", "sub/real.txt");
        _dir.Symlink("root/absolute-alias.txt", _dir.Combine("root/sub/real.txt"));
        _dir.Symlink("root/innocent", ".git/config");
        _dir.Symlink("root/loop", "loop");
        _provider = new ConfinedFileProvider(_root);
    }

    /// <summary>The clock of <see cref="CachedProvider"/>'s cache, in milliseconds.</summary>
    private long _now = 1_000_000;

    public void Dispose()
    {
        _provider.Dispose();
        _dir.Dispose();
    }

    /// <summary>A provider whose open-file cache (1 s validity) runs on <see cref="_now"/>.</summary>
    private ConfinedFileProvider CachedProvider(string? root = null, int capacity = 256) =>
        new(root ?? _root, null, new FileCacheOptions(TimeSpan.FromSeconds(1), capacity, () => Volatile.Read(ref _now)));

    private static Task Dedicated(Action loop) =>
        Task.Factory.StartNew(loop, CancellationToken.None, TaskCreationOptions.LongRunning, TaskScheduler.Default);

    private static string Read(IFileInfo info)
    {
        using var stream = info.CreateReadStream();
        using var reader = new StreamReader(stream);
        return reader.ReadToEnd();
    }

    /// <summary>Where descriptor <paramref name="fd"/> of this process points now, or null if it is not open.</summary>
    private static string? DescriptorTarget(int fd)
    {
        try
        {
            return new FileInfo($"/proc/self/fd/{fd}").LinkTarget;
        }
        catch (IOException)
        {
            return null;
        }
    }

    /// <summary>Replaces <paramref name="relative"/> atomically (write aside, rename over), as deployments do.</summary>
    private void Replace(string relative, string content)
    {
        var aside = _dir.Write(relative + ".new", content);
        File.Move(aside, _dir.Combine(relative), overwrite: true);
    }

    private string? ReadAll(string subpath)
    {
        var info = _provider.GetFileInfo(subpath);
        if (!info.Exists || info.IsDirectory)
        {
            return null;
        }

        using var stream = info.CreateReadStream();
        using var reader = new StreamReader(stream);
        return reader.ReadToEnd();
    }

    [Theory]
    [InlineData("/index.html", "<h1>home</h1>")]
    [InlineData("/sub/real.txt", "real")]
    [InlineData("/alias.txt", "real")]
    [InlineData("/absolute-alias.txt", "real")]
    [InlineData("/.well-known/acme-challenge/token", "acme")]
    [InlineData("/.hidden", "dotfile")]
    [InlineData("//sub//real.txt", "real")]
    public void Serves_files_inside_the_root(string subpath, string expected) =>
        Assert.Equal(expected, ReadAll(subpath));

    [Theory]
    [InlineData("/../secret/secret.txt")]
    [InlineData("/sub/../../secret/secret.txt")]
    [InlineData("/sub/./real.txt")]
    [InlineData("/%2e%2e/secret/secret.txt")]
    [InlineData("/..%2fsecret%2fsecret.txt")]
    [InlineData("/%2E%2E%2Fsecret/secret.txt")]
    [InlineData("/%252e%252e/secret/secret.txt")]
    [InlineData("/..\\secret\\secret.txt")]
    [InlineData("/sub\\..\\..\\secret\\secret.txt")]
    [InlineData("/index.html\0")]
    [InlineData("/sub/real.txt\n")]
    [InlineData("/leak.txt")]
    [InlineData("/leakdir/secret.txt")]
    [InlineData("/relative-leak.txt")]
    [InlineData("/.git/config")]
    [InlineData("/.GIT/config")]
    [InlineData("/.htaccess")]
    [InlineData("/.htpasswd")]
    [InlineData("/.env")]
    [InlineData("/innocent")]
    [InlineData("/loop")]
    [InlineData("/missing.txt")]
    [InlineData("/index.html/")]
    public void Refuses_everything_else(string subpath)
    {
        var info = _provider.GetFileInfo(subpath);
        Assert.False(info.Exists, subpath);
        Assert.False(_provider.GetDirectoryContents(subpath).Exists, subpath);
    }

    [Fact]
    public void Directories_are_reported_and_listed_without_escapes_or_denied_names()
    {
        Assert.False(_provider.GetFileInfo("/").Exists);
        Assert.False(_provider.GetFileInfo("/sub").Exists);
        Assert.True(_provider.GetDirectoryContents("/").Exists);
        Assert.True(_provider.GetDirectoryContents("/sub/").Exists);
        Assert.True(_provider.GetDirectoryContents("/.well-known").Single().IsDirectory);
        Assert.False(_provider.GetDirectoryContents("/leakdir").Exists);

        var names = _provider.GetDirectoryContents("/").Select(f => f.Name).Order(StringComparer.Ordinal).ToArray();
        Assert.Equal(ExpectedRootListing, names);
    }

    [Fact]
    public void Metadata_and_no_physical_path()
    {
        var info = _provider.GetFileInfo("/sub/real.txt");
        Assert.Equal(4, info.Length);

        // Not a path: a token for StaticFileBody that nothing can open (it starts with NUL).
        Assert.StartsWith("\0", info.PhysicalPath, StringComparison.Ordinal);
        Assert.ThrowsAny<ArgumentException>(() => File.OpenRead(info.PhysicalPath!));
        Assert.Null(_provider.GetDirectoryContents("/").Single(f => f.Name == "sub").PhysicalPath);
        Assert.Equal("real.txt", info.Name);
        Assert.Equal(File.GetLastWriteTimeUtc(_dir.Combine("root/sub/real.txt")), info.LastModified.UtcDateTime, TimeSpan.FromSeconds(1));
        Assert.Equal("alias.txt", _provider.GetFileInfo("/alias.txt").Name);
    }

    [Fact]
    public async Task Fifos_are_not_served()
    {
        var fifo = _dir.Combine("root/pipe");
        using (var mkfifo = Process.Start("/usr/bin/mkfifo", [fifo]))
        {
            await mkfifo.WaitForExitAsync();
            Assert.Equal(0, mkfifo.ExitCode);
        }

        Assert.False(_provider.GetFileInfo("/pipe").Exists);
    }

    [Fact]
    public void A_root_that_is_a_symlink_is_followed_per_request_without_the_cache()
    {
        _dir.Write("v1/file.txt", "one");
        _dir.Write("v2/file.txt", "two");
        _dir.Symlink("current", _dir.Combine("v1"));
        using var provider = new ConfinedFileProvider(_dir.Combine("current"), null, FileCacheOptions.Off);
        Assert.Equal("one", Read(provider.GetFileInfo("/file.txt")));

        File.Delete(_dir.Combine("current"));
        _dir.Symlink("current", _dir.Combine("v2"));
        Assert.Equal("two", Read(provider.GetFileInfo("/file.txt")));
    }

    [Fact]
    public void A_root_symlink_switched_is_followed_once_the_validity_period_is_over()
    {
        _dir.Write("v1/file.txt", "one");
        _dir.Write("v2/file.txt", "two");
        _dir.Symlink("current", _dir.Combine("v1"));
        using var provider = CachedProvider(_dir.Combine("current"));
        Assert.Equal("one", Read(provider.GetFileInfo("/file.txt")));

        File.Delete(_dir.Combine("current"));
        _dir.Symlink("current", _dir.Combine("v2"));
        _now += 999;
        Assert.Equal("one", Read(provider.GetFileInfo("/file.txt")));
        _now += 1;
        Assert.Equal("two", Read(provider.GetFileInfo("/file.txt")));
    }

    [Fact]
    public void Cached_answers_share_one_descriptor()
    {
        using var provider = CachedProvider();
        var first = provider.GetFileInfo("/sub/real.txt");
        Assert.Equal("real", Read(first));
        var fd = Assert.IsType<ConfinedFileInfo>(first).SharedDescriptor;
        Assert.NotNull(fd);

        // The next requests within the validity period: the same answer, read through the same descriptor (no walk,
        // no open, no close).
        _now += 500;
        var again = provider.GetFileInfo("/sub/real.txt");
        Assert.Same(first, again);
        Assert.Equal("real", Read(again));
        Assert.Equal(fd, Assert.IsType<ConfinedFileInfo>(again).SharedDescriptor);
        Assert.Equal(_dir.Combine("root/sub/real.txt"), DescriptorTarget(fd.Value));
        Assert.Equal(1, provider.CachedAnswers);
    }

    [Fact]
    public void A_replaced_file_is_served_fresh_after_the_validity_period()
    {
        _dir.Write("root/page.html", "old");
        using var provider = CachedProvider();
        Assert.Equal("old", Read(provider.GetFileInfo("/page.html")));

        Replace("root/page.html", "new!");
        _now += 999;
        var stale = provider.GetFileInfo("/page.html");
        Assert.Equal(3, stale.Length);
        Assert.Equal("old", Read(stale)); // the documented staleness: at most one validity period

        _now += 1;
        var fresh = provider.GetFileInfo("/page.html");
        Assert.Equal(4, fresh.Length);
        Assert.Equal("new!", Read(fresh));
    }

    [Fact]
    public void A_deleted_file_is_gone_after_the_validity_period()
    {
        _dir.Write("root/gone.txt", "x");
        using var provider = CachedProvider();
        Assert.True(provider.GetFileInfo("/gone.txt").Exists);
        File.Delete(_dir.Combine("root/gone.txt"));
        _now += 1000;
        Assert.False(provider.GetFileInfo("/gone.txt").Exists);
        Assert.Equal(0, provider.CachedAnswers);
    }

    [Fact]
    public void A_file_that_becomes_a_symlink_out_of_the_root_is_refused()
    {
        _dir.Write("root/turn.txt", "inside");
        using var provider = CachedProvider();
        Assert.Equal("inside", Read(provider.GetFileInfo("/turn.txt")));

        File.Delete(_dir.Combine("root/turn.txt"));
        _dir.Symlink("root/turn.txt", _dir.Combine("secret/secret.txt"));

        // Within the validity period the answer is the file that was checked, read through the descriptor opened
        // then: never the symlink's target.
        Assert.Equal("inside", Read(provider.GetFileInfo("/turn.txt")));
        _now += 1000;
        Assert.False(provider.GetFileInfo("/turn.txt").Exists);
        Assert.False(provider.GetDirectoryContents("/turn.txt").Exists);
    }

    [Fact]
    public void A_cached_answer_never_read_before_its_path_became_a_symlink_is_not_followed()
    {
        _dir.Write("root/late.txt", "inside");
        using var provider = CachedProvider();
        var info = provider.GetFileInfo("/late.txt");
        Assert.True(info.Exists);

        File.Delete(_dir.Combine("root/late.txt"));
        _dir.Symlink("root/late.txt", _dir.Combine("secret/secret.txt"));
        var cached = provider.GetFileInfo("/late.txt");
        Assert.Same(info, cached);
        Assert.ThrowsAny<IOException>(() => cached.CreateReadStream().Dispose());
    }

    [Fact]
    public void Descriptors_of_expired_answers_are_closed()
    {
        _dir.Write("root/one.txt", "1");
        using var provider = CachedProvider();
        var info = Assert.IsType<ConfinedFileInfo>(provider.GetFileInfo("/one.txt"));
        Assert.Equal("1", Read(info));
        var fd = info.SharedDescriptor!.Value;
        Assert.Equal(_dir.Combine("root/one.txt"), DescriptorTarget(fd));

        _now += 999;
        provider.Sweep();
        Assert.Equal(_dir.Combine("root/one.txt"), DescriptorTarget(fd));

        _now += 1;
        provider.Sweep();
        Assert.Equal(0, provider.CachedAnswers);
        Assert.Null(info.SharedDescriptor);
        Assert.NotEqual(_dir.Combine("root/one.txt"), DescriptorTarget(fd));

        // The evicted answer still works for whoever holds it: it opens (and closes) its own descriptor.
        Assert.Equal("1", Read(info));
        Assert.Null(info.SharedDescriptor);
    }

    [Fact]
    public void A_response_still_reading_keeps_the_descriptor_until_it_is_done()
    {
        _dir.Write("root/long.txt", "0123456789");
        using var provider = CachedProvider();
        var info = Assert.IsType<ConfinedFileInfo>(provider.GetFileInfo("/long.txt"));
        var stream = info.CreateReadStream();
        var fd = info.SharedDescriptor!.Value;

        _now += 1000;
        provider.Sweep();
        Assert.Null(info.SharedDescriptor);
        Assert.Equal(_dir.Combine("root/long.txt"), DescriptorTarget(fd));
        var buffer = new byte[10];
        Assert.Equal(10, stream.Read(buffer));
        Assert.Equal("0123456789", System.Text.Encoding.ASCII.GetString(buffer));

        stream.Dispose();
        Assert.NotEqual(_dir.Combine("root/long.txt"), DescriptorTarget(fd));
    }

    [Fact]
    public void The_expired_answers_are_swept_by_the_provider_itself()
    {
        _dir.Write("root/swept.txt", "s");
        using var provider = new ConfinedFileProvider(_root, null, new FileCacheOptions(TimeSpan.FromMilliseconds(50), 256));
        var info = Assert.IsType<ConfinedFileInfo>(provider.GetFileInfo("/swept.txt"));
        Assert.Equal("s", Read(info));
        var fd = info.SharedDescriptor!.Value;
        var deadline = DateTime.UtcNow.AddSeconds(10);
        while (provider.CachedAnswers > 0 && DateTime.UtcNow < deadline)
        {
            Thread.Sleep(20);
        }

        Assert.Equal(0, provider.CachedAnswers);
        Assert.NotEqual(_dir.Combine("root/swept.txt"), DescriptorTarget(fd));
    }

    [Fact]
    public async Task Readers_racing_expiry_replacement_and_sweeps_always_read_a_whole_version_and_leak_nothing()
    {
        var versions = new[] { new string('a', 5000), new string('b', 7000) };
        _dir.Write("root/race.txt", versions[0]);
        var path = _dir.Combine("root/race.txt");
        var provider = CachedProvider();
        // Two seconds by the clock, on threads of their own: seven busy loops on the thread pool of a 2-core machine
        // starved the test process's other tests (their timers and sockets) for up to 40 s, and the pool's own timer
        // that was to stop them waited as long.
        var clock = Stopwatch.StartNew();
        bool Running() => clock.Elapsed < TimeSpan.FromSeconds(2);
        var reads = 0;
        var readers = Enumerable.Range(0, 6).Select(_ => Dedicated(() =>
        {
            while (Running())
            {
                var info = provider.GetFileInfo("/race.txt");
                Assert.True(info.Exists);
                var text = Read(info);
                Assert.Contains(text, versions);
                Interlocked.Increment(ref reads);
            }
        })).ToList();
        var churn = Dedicated(() =>
        {
            for (var i = 1; Running(); i++)
            {
                Replace("root/race.txt", versions[i % 2]);
                Interlocked.Add(ref _now, 400);
                provider.Sweep();
                Thread.Sleep(1);
            }
        });
        await Task.WhenAll(readers.Append(churn));
        Assert.True(reads > 100, $"{reads} reads");

        provider.Dispose();
        Assert.DoesNotContain(
            Directory.GetFiles("/proc/self/fd").Select(fd => new FileInfo(fd).LinkTarget),
            target => target is not null && target.StartsWith(path, StringComparison.Ordinal));
    }

    [Fact]
    public void A_file_replaced_between_the_walk_and_its_first_read_is_not_shared_under_the_old_answer()
    {
        _dir.Write("root/deploy.txt", "version-one");
        using var provider = CachedProvider();
        var walked = Assert.IsType<ConfinedFileInfo>(provider.GetFileInfo("/deploy.txt")); // e.g. a HEAD, or a 304
        Assert.Equal(11, walked.Length);

        Replace("root/deploy.txt", "v2");

        // The descriptor opened now is not the file the walk described: this read gets what is there (as without the
        // cache), nothing is shared under the old length, and the next lookup walks again.
        Assert.Equal("v2", Read(walked));
        Assert.Null(walked.SharedDescriptor);
        var fresh = Assert.IsType<ConfinedFileInfo>(provider.GetFileInfo("/deploy.txt"));
        Assert.NotSame(walked, fresh);
        Assert.Equal(2, fresh.Length);
        Assert.Equal("v2", Read(fresh));
        Assert.NotNull(fresh.SharedDescriptor);
    }

    [Fact]
    public void Misses_and_refusals_are_not_cached()
    {
        using var provider = CachedProvider();
        Assert.False(provider.GetFileInfo("/new.txt").Exists);
        _dir.Write("root/new.txt", "here");
        Assert.Equal("here", Read(provider.GetFileInfo("/new.txt")));

        Assert.False(provider.GetFileInfo("/leak.txt").Exists);
        Assert.Equal(1, provider.CachedAnswers);
    }

    [Fact]
    public void The_cache_is_bounded_and_answers_beyond_it_are_served_uncached()
    {
        _dir.Write("root/a.txt", "a");
        _dir.Write("root/b.txt", "b");
        _dir.Write("root/c.txt", "c");
        using var provider = CachedProvider(capacity: 2);
        Assert.Equal("a", Read(provider.GetFileInfo("/a.txt")));
        Assert.Equal("b", Read(provider.GetFileInfo("/b.txt")));
        var third = Assert.IsType<ConfinedFileInfo>(provider.GetFileInfo("/c.txt"));
        Assert.Equal("c", Read(third));
        Assert.Equal(2, provider.CachedAnswers);
        Assert.Null(third.SharedDescriptor);

        _now += 1000;
        provider.Sweep();
        Assert.Equal("c", Read(provider.GetFileInfo("/c.txt")));
        Assert.Equal(1, provider.CachedAnswers);
    }

    [Fact]
    public void A_cached_file_asked_for_as_a_directory_is_not_walked_again_within_the_validity_period()
    {
        // DefaultFiles asks "/f.txt/" of every request for "/f.txt": with "/f.txt" cached as a file, the answer comes from
        // the cache. Shown by turning the file into a directory: the cached answer holds for the validity period (the
        // documented staleness), then the walk sees the directory.
        _dir.Write("root/f.txt", "file");
        using var provider = CachedProvider();
        Assert.False(provider.GetDirectoryContents("/f.txt/").Exists); // nothing cached yet: walked (ENOTDIR)
        Assert.Equal("file", Read(provider.GetFileInfo("/f.txt")));

        File.Delete(_dir.Combine("root/f.txt"));
        _dir.Write("root/f.txt/index.html", "now a directory");
        _now += 999;
        Assert.False(provider.GetDirectoryContents("/f.txt/").Exists);
        Assert.True(provider.GetDirectoryContents("/sub/").Exists); // a directory is still walked and listed

        _now += 1;
        var contents = provider.GetDirectoryContents("/f.txt/");
        Assert.True(contents.Exists);
        Assert.Equal(["index.html"], contents.Select(f => f.Name));
    }

    [Fact]
    public void Listings_are_not_cached()
    {
        using var provider = CachedProvider();
        Assert.NotEmpty(provider.GetDirectoryContents("/sub/"));
        Assert.Equal(1, provider.CachedAnswers); // "/sub/" itself, not its entries
    }

    [Fact]
    public void A_symlink_swapped_in_after_the_check_is_not_followed_at_open()
    {
        var info = _provider.GetFileInfo("/sub/real.txt");
        Assert.True(info.Exists);

        // Replace the checked directory with a symlink to the secret directory, then open.
        Directory.Move(_dir.Combine("root/sub"), _dir.Combine("root/sub-old"));
        _dir.Write("secret/real.txt", Secret);
        _dir.Symlink("root/sub", _dir.Combine("secret"));
        Assert.ThrowsAny<IOException>(() => info.CreateReadStream().Dispose());
    }

    [Theory]
    [InlineData("root/")]
    [InlineData("./root")]
    [InlineData("linked-parent/root")]
    public void A_root_spelled_otherwise_or_behind_a_symlink_is_served_and_confined_the_same(string spelling)
    {
        // These roots take the realpath route (a symlink on the way, or a spelling that is not the real path); the
        // plain root takes the one-walk route: both must agree.
        _dir.Symlink("linked-parent", _dir.Path);
        var provider = new ConfinedFileProvider(_dir.Path + "/" + spelling);
        foreach (var (subpath, expected) in new[] { ("/index.html", "<h1>home</h1>"), ("//sub//real.txt", "real"), ("/alias.txt", "real") })
        {
            using var s = new StreamReader(provider.GetFileInfo(subpath).CreateReadStream());
            Assert.Equal(expected, s.ReadToEnd());
        }

        foreach (var refused in new[] { "/leak.txt", "/leakdir/secret.txt", "/relative-leak.txt", "/innocent", "/loop", "/.git/config", "/missing" })
        {
            Assert.False(provider.GetFileInfo(refused).Exists, refused);
            Assert.False(_provider.GetFileInfo(refused).Exists, refused);
        }

        Assert.True(provider.GetDirectoryContents("/sub/").Exists);
        Assert.True(_provider.GetDirectoryContents("/sub/").Exists);
        Assert.False(provider.GetFileInfo("/index.html/").Exists);
        Assert.False(_provider.GetFileInfo("/index.html/").Exists);
    }

    [Theory]
    [InlineData("/srv/www", true)]
    [InlineData("/srv/www/", false)]
    [InlineData("/srv//www", false)]
    [InlineData("/srv/./www", false)]
    [InlineData("/srv/../www", false)]
    [InlineData("/", false)]
    public void Only_a_root_written_as_its_real_path_would_be_skips_realpath(string root, bool canonical) =>
        Assert.Equal(canonical, ConfinedFileProvider.IsCanonicalAbsolute(root));

    [Fact]
    public async Task The_file_stream_reads_seeks_and_reports_its_length()
    {
        _dir.Write("root/digits.txt", "0123456789");
        using var stream = _provider.GetFileInfo("/digits.txt").CreateReadStream();
        Assert.True(stream.CanSeek);
        Assert.Equal(10, stream.Length);
        stream.Seek(3, SeekOrigin.Begin);
        var buffer = new byte[4];
        Assert.Equal(4, await stream.ReadAsync(buffer));
        Assert.Equal("3456", System.Text.Encoding.ASCII.GetString(buffer));
        Assert.Equal(7, stream.Position);
        stream.Seek(-1, SeekOrigin.End);
        Assert.Equal(1, stream.Read(buffer, 0, 4));
        Assert.Equal((byte)'9', buffer[0]);
        Assert.Equal(0, await stream.ReadAsync(buffer));
    }

    [Fact]
    public async Task A_lookup_is_remembered_within_one_request_only()
    {
        using var provider = new ConfinedFileProvider(_root, null, FileCacheOptions.Off);
        _dir.Write("root/memo.txt", "x");
        await Task.Run(() =>
        {
            ConfinedFileProvider.BeginRequest();
            Assert.True(provider.GetFileInfo("/memo.txt").Exists);
            File.Delete(_dir.Combine("root/memo.txt"));

            // DefaultFiles then StaticFiles asking for the same file in one request: one walk, one answer.
            Assert.True(provider.GetFileInfo("/memo.txt").Exists);
        });

        // The next request (and anything outside a request) looks again.
        await Task.Run(() =>
        {
            ConfinedFileProvider.BeginRequest();
            Assert.False(provider.GetFileInfo("/memo.txt").Exists);
        });
        Assert.False(provider.GetFileInfo("/memo.txt").Exists);
    }

    [Fact]
    public void Relative_roots_are_refused() =>
        Assert.Throws<ArgumentException>(() => new ConfinedFileProvider("relative/root"));
}
