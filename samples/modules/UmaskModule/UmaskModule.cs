using System.Runtime.CompilerServices;
using System.Runtime.InteropServices;
using System.Text;
using System.Text.Json;

namespace Dispatch.Example;

/// <summary>
/// An example privilege module in C#, published with NativeAOT as a native shared library: sets the
/// workers' file-creation mask, so files a tenant's CGI scripts create are not readable by others.
/// Pool settings: <c>{ "umask": "027" }</c>. The two exports are the module ABI (docs/modules.md):
/// each takes the pool's settings as NUL-terminated UTF-8 JSON and an error buffer, and returns 0
/// when all is well, or 1 with a NUL-terminated message in the buffer.
/// </summary>
public static partial class UmaskModule
{
    [UnmanagedCallersOnly(EntryPoint = "validate", CallConvs = [typeof(CallConvCdecl)])]
    public static unsafe int Validate(byte* configJson, byte* errorBuffer, nuint length) =>
        Run(configJson, errorBuffer, length, apply: false);

    [UnmanagedCallersOnly(EntryPoint = "apply", CallConvs = [typeof(CallConvCdecl)])]
    public static unsafe int Apply(byte* configJson, byte* errorBuffer, nuint length) =>
        Run(configJson, errorBuffer, length, apply: true);

    private static unsafe int Run(byte* configJson, byte* errorBuffer, nuint length, bool apply)
    {
        // No exception may cross the C boundary: every failure becomes a message and a return value.
        string? problem;
        try
        {
            var json = MemoryMarshal.CreateReadOnlySpanFromNullTerminated(configJson);
            problem = TryParse(json, out var mask);
            if (problem is null && apply)
                _ = SetUmask(mask);
        }
        catch (Exception e)
        {
            problem = $"unexpected error: {e.Message}";
        }

        if (problem is null)
            return 0;
        WriteError(problem, errorBuffer, length);
        return 1;
    }

    private static string? TryParse(ReadOnlySpan<byte> json, out uint mask)
    {
        mask = 0;
        using var doc = JsonDocument.Parse(json.ToArray());
        if (doc.RootElement.ValueKind != JsonValueKind.Object || !doc.RootElement.TryGetProperty("umask", out var value) || value.ValueKind != JsonValueKind.String)
            return "expects { \"umask\": \"027\" }";
        var text = value.GetString()!;
        if (text.Length is < 3 or > 4 || !text.All(c => c is >= '0' and <= '7'))
            return $"umask '{text}' is not three or four octal digits";
        mask = Convert.ToUInt32(text, 8);
        return null;
    }

    /// <summary>Copies as much of the message as fits, always NUL-terminated, never cutting a UTF-8 sequence.</summary>
    private static unsafe void WriteError(string message, byte* buffer, nuint length)
    {
        if (buffer is null || length == 0)
            return;
        var room = new Span<byte>(buffer, (int)Math.Min(length - 1, int.MaxValue));
        var encoder = Encoding.UTF8.GetEncoder();
        encoder.Convert(message, room, flush: true, out _, out var written, out _);
        buffer[written] = 0;
    }

    [LibraryImport("libc", EntryPoint = "umask")]
    private static partial uint SetUmask(uint mask);
}
