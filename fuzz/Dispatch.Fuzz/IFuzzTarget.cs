namespace Dispatch.Fuzz;

/// <summary>
/// One fuzzing target: hands arbitrary bytes to one parser the way production does. <see cref="Run"/> returns
/// normally when the parser accepted the input or rejected it the documented way (its own exception type, its
/// false or Invalid result); anything else (another exception, a broken invariant) escapes and is a finding.
/// </summary>
internal interface IFuzzTarget
{
    /// <summary>The name scripts/fuzz.sh and fuzz/corpus/&lt;name&gt;/ use.</summary>
    string Name { get; }

    /// <summary>What is fed to what, in one line (for <c>Dispatch.Fuzz list</c>).</summary>
    string Description { get; }

    /// <summary>Runs one input.</summary>
    void Run(ReadOnlySpan<byte> data);
}
