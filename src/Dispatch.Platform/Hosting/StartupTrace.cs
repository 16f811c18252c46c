using System.Diagnostics;
using System.Globalization;
using Dispatch.Platform.Spawn;

namespace Dispatch.Platform.Hosting;

/// <summary>
/// Where a cold start's milliseconds go (docs/coldstart.md): each step of a child's start — in the master,
/// stage 1, the jailed image and the dispatcher — is logged at Debug level as <c>Start-up {Step} at
/// {MonotonicMs} ms</c>, on CLOCK_MONOTONIC (<see cref="Stopwatch.GetTimestamp"/> on Linux), the same clock
/// in every process, so one start can be followed across them (bench/coldstart.sh does).
/// </summary>
public static class StartupTrace
{
    /// <summary>The message template every step is logged with.</summary>
    public const string Template = "Start-up {Step} at {MonotonicMs} ms";

    /// <summary>Now, in milliseconds of CLOCK_MONOTONIC (rounded to 0.01 ms).</summary>
    public static double NowMs => Math.Round(Stopwatch.GetTimestamp() * 1000.0 / Stopwatch.Frequency, 2);

    /// <summary>True when the children's log level (the config's log.level) is Debug or Verbose.</summary>
    public static bool Enabled => Spawner.LogLevel is "Debug" or "Verbose";

    /// <summary>
    /// A step of stage 1, which has no logger: one line on stderr in the children's format (level, message,
    /// then the properties as JSON after a unit separator: <see cref="ChildLogFormatter"/>), only at Debug level.
    /// </summary>
    public static void WriteStage1(string step, double? at = null)
    {
        if (!Enabled)
            return;
        var ms = at ?? NowMs;
        Console.Error.WriteLine(string.Create(
            CultureInfo.InvariantCulture,
            $"DBG Start-up {step} at {ms} ms{ChildLogFormatter.Separator}{{\"Step\":\"{step}\",\"MonotonicMs\":{ms}}}"));
    }
}
