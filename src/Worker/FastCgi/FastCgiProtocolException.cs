namespace Dispatch.Worker.FastCgi;

/// <summary>The application broke the FastCGI protocol (bad version, unexpected type or request id, bad lengths).</summary>
internal sealed class FastCgiProtocolException(string message) : IOException(message);
