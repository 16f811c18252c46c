namespace Dispatch.Platform.Cgroups;

/// <summary>A cgroup operation that failed, naming the file or directory.</summary>
public sealed class CgroupException : Exception
{
    public CgroupException()
    {
    }

    public CgroupException(string message) : base(message)
    {
    }

    public CgroupException(string message, Exception innerException) : base(message, innerException)
    {
    }
}
