namespace Dispatch.Master.Children;

/// <summary>
/// How often a dispatcher slot may restart its dispatcher: at most <see cref="MaxPerWindow"/> deaths within
/// <see cref="Window"/>; one more, and the master stops rather than restart a dispatcher that keeps dying.
/// </summary>
internal sealed class RestartBudget
{
    public const int MaxPerWindow = 5;
    public static readonly TimeSpan Window = TimeSpan.FromMinutes(1);
    private readonly Queue<long> _deaths = new();

    /// <summary>
    /// Counts a death at <paramref name="nowMs"/> (Environment.TickCount64); false when it exceeds the budget.
    /// <paramref name="count"/>: the deaths within the window, this one included.
    /// </summary>
    public bool TryTake(long nowMs, out int count)
    {
        _deaths.Enqueue(nowMs);
        while (_deaths.Count > 0 && nowMs - _deaths.Peek() > (long)Window.TotalMilliseconds)
            _deaths.Dequeue();
        count = _deaths.Count;
        return count <= MaxPerWindow;
    }
}
