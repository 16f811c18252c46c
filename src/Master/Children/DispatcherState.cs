namespace Dispatch.Master.Children;

/// <summary>Where a dispatcher stands in the slots.</summary>
internal enum DispatcherState
{
    /// <summary>In a slot: it accepts connections.</summary>
    Serving,

    /// <summary>Replaced by an upgrade: it finishes its open connections.</summary>
    Draining,

    /// <summary>In no slot any more (replaced after it died, or drained).</summary>
    Gone,
}
