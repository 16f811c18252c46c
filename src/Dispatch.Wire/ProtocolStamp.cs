using System.Runtime.CompilerServices;

namespace Dispatch.Wire;

/// <summary>
/// The protocol version as it sits in the bytes of a built binary, so that a master can tell, before an
/// upgrade, which protocol the newly installed binaries speak without running them (its reaper owns
/// every child's exit status). The stamp is a fixed prefix followed by <see cref="IpcChannel.Version"/>,
/// stored verbatim as constant data: in the NativeAOT Master executable (which holds this code, so the
/// data is kept), or in Dispatch.Wire.dll under the JIT. All three executables are published
/// together (scripts/publish.sh), so the new Master's stamp is the new children's protocol.
/// </summary>
public static class ProtocolStamp
{
    private const int ChunkSize = 1 << 20;

    /// <summary>"\0DispatchIpcProtocolVersion=" then the version byte.</summary>
    private static ReadOnlySpan<byte> Stamp =>
    [
        0, (byte)'D', (byte)'i', (byte)'s', (byte)'p', (byte)'a', (byte)'t', (byte)'c', (byte)'h',
        (byte)'I', (byte)'p', (byte)'c', (byte)'P', (byte)'r', (byte)'o', (byte)'t', (byte)'o', (byte)'c', (byte)'o', (byte)'l',
        (byte)'V', (byte)'e', (byte)'r', (byte)'s', (byte)'i', (byte)'o', (byte)'n', (byte)'=', IpcChannel.Version,
    ];

    /// <summary>
    /// The file of an installed tree that carries the stamp, in the form this process runs as: the native
    /// Master (NativeAOT), or Dispatch.Wire.dll (a JIT build). A tree of the other form has no such
    /// file, and the probe says so: switching between the two forms needs a restart of the master.
    /// </summary>
    public static string CarrierIn(string appDirectory) =>
        Path.Combine(appDirectory, !RuntimeFeature.IsDynamicCodeSupported /* NativeAOT, as RuntimePaths.IsNativeAot */ ? "Master" : "Dispatch.Wire.dll");

    /// <summary>The version byte after the first stamp prefix in <paramref name="path"/>, or null when there is none.</summary>
    /// <exception cref="IOException">The file cannot be read.</exception>
    /// <exception cref="UnauthorizedAccessException">The file cannot be opened.</exception>
    public static byte? Read(string path)
    {
        var prefix = Stamp[..^1];
        using var file = File.OpenRead(path);
        var buffer = new byte[ChunkSize + prefix.Length];
        var kept = 0;
        while (true)
        {
            var read = file.Read(buffer, kept, ChunkSize);
            if (read == 0)
                return null;
            var window = buffer.AsSpan(0, kept + read);
            var at = window.IndexOf(prefix);
            if (at >= 0)
            {
                if (at + prefix.Length < window.Length)
                    return window[at + prefix.Length];
                // The prefix ends the window: its version byte is the next one in the file.
                var next = file.ReadByte();
                return next < 0 ? null : (byte)next;
            }

            // Keep the tail that could start a prefix cut by the chunk boundary.
            kept = Math.Min(prefix.Length, window.Length);
            window[^kept..].CopyTo(buffer);
        }
    }
}
