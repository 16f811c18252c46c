namespace Dispatch.Platform.Modules;

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
