using System.IO.Pipelines;

namespace Dispatch.Worker.Tls;

/// <summary>A duplex pipe over another's output, reading from a given input (the record layer's plaintext behind what the dispatcher already decrypted).</summary>
internal sealed class PrefixedDuplexPipe(PipeReader input, PipeWriter output) : IDuplexPipe
{
    public PipeReader Input { get; } = input;

    public PipeWriter Output { get; } = output;
}
