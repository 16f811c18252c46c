using System.Diagnostics;
using System.Text;

namespace Dispatch.TlsDispatcher.Tests.Tls;

/// <summary>Runs openssl / curl as real clients.</summary>
public static class ExternalTool
{
    public sealed record Result(int ExitCode, string StdOut, string StdErr, bool TimedOut)
    {
        public string All => StdOut + "\n" + StdErr;
    }

    public static bool Exists(string name)
        => (Environment.GetEnvironmentVariable("PATH") ?? "").Split(':').Any(dir => File.Exists(Path.Combine(dir, name)));

    /// <summary>
    /// Starts <paramref name="file"/>; writes <paramref name="stdin"/>; closes stdin once <paramref name="closeStdinWhen"/>
    /// matches stdout (or at once when null); waits for exit (killing it after <paramref name="timeout"/>).
    /// </summary>
    public static async Task<Result> RunAsync(
        string file,
        IEnumerable<string> arguments,
        string? stdin = null,
        Func<string, bool>? closeStdinWhen = null,
        TimeSpan? timeout = null)
    {
        var psi = new ProcessStartInfo(file)
        {
            RedirectStandardInput = true,
            RedirectStandardOutput = true,
            RedirectStandardError = true,
            UseShellExecute = false,
        };
        foreach (string argument in arguments)
            psi.ArgumentList.Add(argument);

        using var process = new Process { StartInfo = psi };
        var stdout = new StringBuilder();
        var stderr = new StringBuilder();
        var outputMatched = new TaskCompletionSource(TaskCreationOptions.RunContinuationsAsynchronously);
        process.OutputDataReceived += (_, e) =>
        {
            if (e.Data is null)
                return;
            lock (stdout)
            {
                stdout.AppendLine(e.Data);
                if (closeStdinWhen is not null && closeStdinWhen(stdout.ToString()))
                    outputMatched.TrySetResult();
            }
        };
        process.ErrorDataReceived += (_, e) =>
        {
            if (e.Data is null)
                return;
            lock (stderr)
                stderr.AppendLine(e.Data);
        };
        process.Start();
        process.BeginOutputReadLine();
        process.BeginErrorReadLine();

        using var cts = new CancellationTokenSource(timeout ?? TimeSpan.FromSeconds(20));
        bool timedOut = false;
        try
        {
            if (stdin is not null)
            {
                await process.StandardInput.WriteAsync(stdin);
                await process.StandardInput.FlushAsync();
            }

            if (closeStdinWhen is not null)
            {
                await Task.WhenAny(outputMatched.Task, process.WaitForExitAsync(cts.Token));
            }

            process.StandardInput.Close();
            await process.WaitForExitAsync(cts.Token);
        }
        catch (Exception e) when (e is OperationCanceledException or IOException)
        {
            timedOut = cts.IsCancellationRequested;
            try
            {
                process.Kill(entireProcessTree: true);
            }
            catch (InvalidOperationException)
            {
            }

            await process.WaitForExitAsync();
        }

        process.WaitForExit(); // flush the async output readers
        lock (stdout)
        {
            lock (stderr)
                return new Result(process.HasExited ? process.ExitCode : -1, stdout.ToString(), stderr.ToString(), timedOut);
        }
    }
}
