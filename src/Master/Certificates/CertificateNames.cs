namespace Dispatch.Master.Certificates;

/// <summary>Whether a certificate name (possibly "*.x") covers a host name (possibly "*.x"), as a browser would for coalescing.</summary>
internal static class CertificateNames
{
    public static bool Covers(string san, string name)
    {
        if (san == name)
            return true;
        if (san.StartsWith("*.", StringComparison.Ordinal))
        {
            var suffix = san[1..]; // ".x"
            var candidate = name.StartsWith("*.", StringComparison.Ordinal) ? name[2..] : name;
            var dot = candidate.IndexOf('.', StringComparison.Ordinal);
            return !name.StartsWith("*.", StringComparison.Ordinal) && dot > 0 && candidate[dot..] == suffix;
        }

        // "*.x" routed elsewhere and a certificate naming "y.x": a client may reach y.x there.
        return name.StartsWith("*.", StringComparison.Ordinal) && san.EndsWith(name[1..], StringComparison.Ordinal) && san.IndexOf('.', StringComparison.Ordinal) == san.Length - name.Length + 1;
    }
}
