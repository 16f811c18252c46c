namespace Dispatch.Fuzz;

/// <summary>A parser broke one of its documented promises without throwing (e.g. asked for fewer bytes than it had).</summary>
internal sealed class FuzzFindingException : Exception
{
    public FuzzFindingException()
    {
    }

    public FuzzFindingException(string message) : base(message)
    {
    }

    public FuzzFindingException(string message, Exception innerException) : base(message, innerException)
    {
    }
}
