using System.Reflection;
using System.Runtime.Loader;
using Dispatch.Protocol.Interop;

namespace Dispatch.Protocol.Modules;

/// <summary>
/// Loads a third-party privilege module as root without being steered by anyone else: every
/// component of its path owned by root and writable by no one else, the file regular and opened
/// with O_NOFOLLOW, checked again on the open descriptor, and the assembly read from that very
/// descriptor (never reopened by path).
/// </summary>
public static unsafe class ModuleLoader
{
    private const int MaxAssemblyBytes = 16 << 20;

    public static IPrivilegeModule Load(string assemblyPath, string typeName)
    {
        if (!Path.IsPathRooted(assemblyPath))
            throw new ModuleException($"{assemblyPath}: not an absolute path");
        foreach (var component in PathComponents.Of(Path.GetFullPath(assemblyPath)))
        {
            Libc.Stat st;
            if (Libc.LStat(component, &st) != 0)
                throw new ModuleException($"{component}: {Libc.Describe(Libc.LastError)}");
            if ((st.Mode & Libc.S_IFMT) == Libc.S_IFLNK)
                throw new ModuleException($"{component} is a symbolic link; module paths must not contain any");
            if (st.Uid != 0)
                throw new ModuleException($"{component} is owned by uid {st.Uid}, not root");
            if ((st.Mode & 0x12) != 0)
                throw new ModuleException($"{component} is writable by group or others (mode {Convert.ToString(st.Mode & 0xFFF, 8)})");
        }

        var fd = Libc.Open(assemblyPath, Libc.O_RDONLY | Libc.O_CLOEXEC | Libc.O_NOFOLLOW, 0);
        if (fd < 0)
            throw new ModuleException($"{assemblyPath}: {Libc.Describe(Libc.LastError)}");
        byte[] image;
        try
        {
            Libc.Stat st;
            if (Libc.FStat(fd, &st) != 0 || (st.Mode & Libc.S_IFMT) != Libc.S_IFREG || st.Uid != 0 || (st.Mode & 0x12) != 0)
                throw new ModuleException($"{assemblyPath}: changed under us, or not a root-owned regular file writable only by root");
            if (st.Size > MaxAssemblyBytes)
                throw new ModuleException($"{assemblyPath}: {st.Size} bytes, more than {MaxAssemblyBytes}");
            image = new byte[st.Size];
            fixed (byte* p = image)
            {
                var done = 0L;
                while (done < image.Length)
                {
                    var n = Libc.PRead(fd, p + done, (nuint)(image.Length - done), done);
                    if (n <= 0)
                        throw new ModuleException($"{assemblyPath}: short read");
                    done += n;
                }
            }
        }
        finally
        {
            Libc.Close(fd);
        }

        Assembly assembly;
        try
        {
            var context = new AssemblyLoadContext($"module:{assemblyPath}", isCollectible: false);
            using var stream = new MemoryStream(image);
            assembly = context.LoadFromStream(stream);
        }
        catch (BadImageFormatException e)
        {
            throw new ModuleException($"{assemblyPath}: not a .NET assembly: {e.Message}");
        }

        var type = assembly.GetType(typeName, throwOnError: false)
            ?? throw new ModuleException($"{assemblyPath}: no type named '{typeName}'");
        if (!typeof(IPrivilegeModule).IsAssignableFrom(type) || type.IsAbstract || type.GetConstructor(Type.EmptyTypes) is null)
            throw new ModuleException($"{typeName} is not a public {nameof(IPrivilegeModule)} with a parameterless constructor");
        return (IPrivilegeModule)Activator.CreateInstance(type)!;
    }
}

public sealed class ModuleException : Exception
{
    public ModuleException()
    {
    }

    public ModuleException(string message) : base(message)
    {
    }

    public ModuleException(string message, Exception innerException) : base(message, innerException)
    {
    }
}
