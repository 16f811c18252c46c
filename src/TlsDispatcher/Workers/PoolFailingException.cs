namespace Dispatch.TlsDispatcher.Workers;

/// <summary>The pool's workers fail to start and the master backs off: a connection waiting for one gets 503 now.</summary>
internal sealed class PoolFailingException : Exception
{
    public PoolFailingException()
    {
    }

    public PoolFailingException(string message)
        : base(message)
    {
    }

    public PoolFailingException(string message, Exception innerException)
        : base(message, innerException)
    {
    }
}
