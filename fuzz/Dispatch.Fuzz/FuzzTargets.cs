namespace Dispatch.Fuzz;

/// <summary>Every target, by name. Add a new one here (docs/fuzzing.md, "Adding a target").</summary>
internal static class FuzzTargets
{
    public static IFuzzTarget[] Create() =>
    [
        new ClientHelloTarget(),
        new RequestHeadTarget(),
        new ProxyProtocolTarget(),
        new RecordLayerTarget(),
        new IpcTarget(),
        new ChildStderrTarget(),
        new ConfigTarget(),
    ];

    public static IFuzzTarget? Find(string name) => Array.Find(Create(), t => t.Name == name);
}
