namespace Dispatch.Master.Operations;

/// <summary>The last reload: when, its result ("ok", "rejected", "failed"), and what it said.</summary>
internal sealed record ReloadRecord(DateTime At, string Result, string Detail);
