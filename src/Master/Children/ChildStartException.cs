namespace Dispatch.Master.Children;

internal sealed class ChildStartException : Exception
{
    public ChildStartException()
    {
    }

    public ChildStartException(string message) : base(message)
    {
    }

    public ChildStartException(string message, Exception innerException) : base(message, innerException)
    {
    }
}
