using System.Security.Cryptography;
using System.Security.Cryptography.X509Certificates;
using Dispatch.Master.Files;
using Dispatch.Platform.Interop;

namespace Dispatch.Master.Certificates;

/// <summary>
/// Reads a certbot-layout directory (<c>fullchain.pem</c>, <c>privkey.pem</c>) as root without being
/// steered by anyone else: every directory on the way owned by root and writable by no one else; the
/// files regular, owned by root, not writable by group or others, at most 64 KiB; a symlink followed
/// only when it is certbot's own <c>live/NAME/x.pem → ../../archive/NAME/xN.pem</c>; the final open
/// with O_NOFOLLOW and checked again on the open descriptor. Then the key must match the certificate,
/// which must be valid now.
/// </summary>
internal static unsafe class CertificateLoader
{
    public const int MaxFileBytes = 64 * 1024;

    public static LoadedCertificate Load(string directory)
    {
        // VhostSection refuses such a certDir first, as a config error; this keeps GetFullPath from throwing.
        if (!Path.IsPathFullyQualified(directory) || directory.Contains('\0', StringComparison.Ordinal))
            throw new CertificateException($"'{directory}' is not an absolute path");
        var dir = Path.TrimEndingDirectorySeparator(Path.GetFullPath(directory));
        var unsafeDir = PathSafety.CheckRootOwned(dir);
        if (unsafeDir is not null)
            throw new CertificateException($"{dir}: {unsafeDir}");
        var chain = ReadCertbotFile(dir, "fullchain.pem");
        var key = ReadCertbotFile(dir, "privkey.pem");

        X509Certificate2 leaf;
        try
        {
            leaf = X509Certificate2.CreateFromPem(chain, key);
        }
        catch (Exception e) when (e is CryptographicException or ArgumentException)
        {
            throw new CertificateException($"{dir}: privkey.pem does not match the certificate in fullchain.pem, or cannot be read: {e.Message}");
        }

        using (leaf)
        {
            var now = DateTime.UtcNow;
            if (leaf.NotAfter.ToUniversalTime() < now)
                throw new CertificateException($"{dir}: the certificate expired on {leaf.NotAfter.ToUniversalTime():u}");
            if (leaf.NotBefore.ToUniversalTime() > now)
                throw new CertificateException($"{dir}: the certificate is not valid before {leaf.NotBefore.ToUniversalTime():u}");
            var keyType = leaf.GetECDsaPublicKey() is { } ec ? $"ECDSA {ec.KeySize}" : leaf.GetRSAPublicKey() is { } rsa ? $"RSA {rsa.KeySize}" : "unsupported";
            var names = leaf.Extensions.OfType<X509SubjectAlternativeNameExtension>().SelectMany(e => e.EnumerateDnsNames()).Select(n => n.ToLowerInvariant()).ToList();
            return new LoadedCertificate(dir, chain, key, leaf.Subject, keyType, leaf.NotAfter.ToUniversalTime(), leaf.SerialNumber, names);
        }
    }

    private static string ReadCertbotFile(string dir, string name)
    {
        var path = Path.Combine(dir, name);
        Libc.Stat st;
        if (Libc.LStat(path, &st) != 0)
            throw new CertificateException($"{path}: {Libc.Describe(Libc.LastError)}");
        if ((st.Mode & Libc.S_IFMT) == Libc.S_IFLNK)
        {
            var target = new FileInfo(path).LinkTarget!;
            var lineage = Path.GetFileName(dir);
            var archive = Path.GetFullPath(Path.Combine(dir, "..", "..", "archive", lineage));
            var resolved = Path.GetFullPath(Path.Combine(dir, target));
            var stem = Path.GetFileNameWithoutExtension(name);
            var file = Path.GetFileName(resolved);
            if (Path.GetDirectoryName(resolved) != archive || !file.StartsWith(stem, StringComparison.Ordinal) || !file.EndsWith(".pem", StringComparison.Ordinal)
                || !file[stem.Length..^4].All(char.IsAsciiDigit) || file.Length == stem.Length + 4)
                throw new CertificateException($"{path}: symlink to '{target}' is not certbot's live/{lineage}/{name} → ../../archive/{lineage}/{stem}N.pem");
            var unsafeArchive = PathSafety.CheckRootOwned(archive);
            if (unsafeArchive is not null)
                throw new CertificateException($"{path}: {unsafeArchive}");
            path = resolved;
        }

        var bytes = RootOwnedFile.TryRead(path, MaxFileBytes, out var problem) ?? throw new CertificateException(problem!);
        return System.Text.Encoding.ASCII.GetString(bytes);
    }
}
