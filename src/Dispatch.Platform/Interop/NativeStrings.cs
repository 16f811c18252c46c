using System.Runtime.InteropServices;
using System.Text;

namespace Dispatch.Platform.Interop;

/// <summary>NUL-terminated UTF-8 strings and string arrays for exec and posix_spawn, freed together.</summary>
public sealed unsafe class NativeStrings : IDisposable
{
    private readonly List<nint> _owned = [];

    public byte* Utf8(string s)
    {
        var count = Encoding.UTF8.GetByteCount(s);
        var p = (byte*)NativeMemory.Alloc((nuint)count + 1);
        _owned.Add((nint)p);
        Encoding.UTF8.GetBytes(s, new Span<byte>(p, count));
        p[count] = 0;
        return p;
    }

    /// <summary>A NULL-terminated array of strings (argv, envp).</summary>
    public byte** Array(IReadOnlyList<string> values)
    {
        var array = (byte**)NativeMemory.AllocZeroed((nuint)(values.Count + 1), (nuint)sizeof(nint));
        _owned.Add((nint)array);
        for (var i = 0; i < values.Count; i++)
            array[i] = Utf8(values[i]);
        return array;
    }

    public void Dispose()
    {
        foreach (var p in _owned)
            NativeMemory.Free((void*)p);
        _owned.Clear();
    }
}
