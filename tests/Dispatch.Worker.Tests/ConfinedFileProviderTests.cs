using System.Diagnostics;
using Dispatch.Worker.Http;
using Dispatch.Worker.Tests.Support;

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

    public void Dispose() => _dir.Dispose();

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
        Assert.Null(info.PhysicalPath);
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
    public void A_root_that_is_a_symlink_is_followed_per_request()
    {
        _dir.Write("v1/file.txt", "one");
        _dir.Write("v2/file.txt", "two");
        _dir.Symlink("current", _dir.Combine("v1"));
        var provider = new ConfinedFileProvider(_dir.Combine("current"));
        using (var s = new StreamReader(provider.GetFileInfo("/file.txt").CreateReadStream()))
        {
            Assert.Equal("one", s.ReadToEnd());
        }

        File.Delete(_dir.Combine("current"));
        _dir.Symlink("current", _dir.Combine("v2"));
        using (var s = new StreamReader(provider.GetFileInfo("/file.txt").CreateReadStream()))
        {
            Assert.Equal("two", s.ReadToEnd());
        }
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
        _dir.Write("root/memo.txt", "x");
        await Task.Run(() =>
        {
            ConfinedFileProvider.BeginRequest();
            Assert.True(_provider.GetFileInfo("/memo.txt").Exists);
            File.Delete(_dir.Combine("root/memo.txt"));

            // DefaultFiles then StaticFiles asking for the same file in one request: one walk, one answer.
            Assert.True(_provider.GetFileInfo("/memo.txt").Exists);
        });

        // The next request (and anything outside a request) looks again.
        await Task.Run(() =>
        {
            ConfinedFileProvider.BeginRequest();
            Assert.False(_provider.GetFileInfo("/memo.txt").Exists);
        });
        Assert.False(_provider.GetFileInfo("/memo.txt").Exists);
    }

    [Fact]
    public void Relative_roots_are_refused() =>
        Assert.Throws<ArgumentException>(() => new ConfinedFileProvider("relative/root"));
}
