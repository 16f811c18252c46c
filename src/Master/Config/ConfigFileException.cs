namespace Dispatch.Master.Config;

/// <summary>A file named by the config (such as a credentials file) that cannot be used; the message names the file (and line).</summary>
internal sealed class ConfigFileException : Exception
{
    public ConfigFileException()
    {
    }

    public ConfigFileException(string message) : base(message)
    {
    }

    public ConfigFileException(string message, Exception innerException) : base(message, innerException)
    {
    }
}
