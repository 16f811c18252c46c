namespace Dispatch.Wire.Interop;

/// <summary>A failed system call, with the real errno and its text.</summary>
public sealed class SysCallException : Exception
{
    public SysCallException(string call, int errno)
        : base($"{call} failed: {WireLibc.Describe(errno)}")
    {
        Call = call;
        Errno = errno;
    }

    public SysCallException()
    {
        Call = string.Empty;
    }

    public SysCallException(string message) : base(message)
    {
        Call = string.Empty;
    }

    public SysCallException(string message, Exception innerException) : base(message, innerException)
    {
        Call = string.Empty;
    }

    public string Call { get; }

    public int Errno { get; }

    public static void ThrowLast(string call) => throw new SysCallException(call, WireLibc.LastError);
}
