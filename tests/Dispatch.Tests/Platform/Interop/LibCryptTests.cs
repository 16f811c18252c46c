using System.Text;
using Dispatch.Platform.Interop;

namespace Dispatch.Tests.Platform.Interop;

/// <summary>
/// <see cref="LibCrypt"/> against hashes made by other tools: bcrypt by Apache's htpasswd (apache2-utils), SHA-crypt
/// by openssl passwd. Each must verify its password and nothing else.
/// </summary>
public sealed class LibCryptTests
{
    private static string Tool(string file, params string[] args)
    {
        var psi = new System.Diagnostics.ProcessStartInfo(file) { RedirectStandardOutput = true, RedirectStandardError = true };
        foreach (var a in args)
            psi.ArgumentList.Add(a);
        using var p = System.Diagnostics.Process.Start(psi) ?? throw new InvalidOperationException($"{file} did not start");
        var output = p.StandardOutput.ReadToEnd();
        p.WaitForExit();
        Assert.True(p.ExitCode == 0, $"{file} failed: {p.StandardError.ReadToEnd()}");
        return output.Trim();
    }

    public static TheoryData<string> Hashes() => new()
    {
        Tool("htpasswd", "-nbB", "-C", "5", "u", "correct horse").Split(':', 2)[1],
        Tool("openssl", "passwd", "-5", "correct horse"),
        Tool("openssl", "passwd", "-6", "correct horse"),
    };

    [Theory]
    [MemberData(nameof(Hashes))]
    public void A_hash_verifies_its_password_only(string hash)
    {
        Assert.True(LibCrypt.IsWellFormed(hash));
        Assert.True(LibCrypt.Verify(Encoding.UTF8.GetBytes("correct horse"), hash));
        Assert.False(LibCrypt.Verify(Encoding.UTF8.GetBytes("correct horsf"), hash));
        Assert.False(LibCrypt.Verify([], hash));
        Assert.False(LibCrypt.Verify(Encoding.UTF8.GetBytes("correct horse\0"), hash));
    }

    [Theory]
    [InlineData("$apr1$abcdefgh$0123456789012345678901")] // Apache MD5: refused
    [InlineData("{SHA}W6ph5Mm5Pz8GgiULbPgzG37mj9g=")]
    [InlineData("abJnggxhB/yJU")] // DES crypt
    [InlineData("$2y$04$short")]
    [InlineData("")]
    public void Other_schemes_and_malformed_hashes_are_refused(string hash)
    {
        Assert.False(LibCrypt.IsWellFormed(hash));
        Assert.False(LibCrypt.Verify("password"u8, hash));
    }
}
