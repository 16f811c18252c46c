using Dispatch.Fuzz;
using SharpFuzz;

// Dispatch.Fuzz list                          the targets
// Dispatch.Fuzz run <target>                  under afl-fuzz: SharpFuzz's fork server, one input per round
// Dispatch.Fuzz replay <target> <path>...     each file (or every file of each directory) once, in process;
//                                             exit 1 on the first finding, with its exception
// Dispatch.Fuzz seeds <corpus-dir>            (re)writes the seeds made with our own writers
const int Usage = 64;
if (args is ["list"])
{
    foreach (var t in FuzzTargets.Create())
        Console.WriteLine($"{t.Name,-14} {t.Description}");
    return 0;
}

if (args is ["seeds", var corpus])
{
    Seeds.Write(corpus);
    return 0;
}

if (args is ["run", var runName])
{
    var target = FuzzTargets.Find(runName);
    if (target is null)
        return UnknownTarget(runName);
    Fuzzer.Run(stream =>
    {
        using var memory = new MemoryStream();
        stream.CopyTo(memory);
        target.Run(memory.GetBuffer().AsSpan(0, (int)memory.Length));
    });
    return 0;
}

if (args is ["replay", var replayName, .. var paths] && paths.Length > 0)
{
    var target = FuzzTargets.Find(replayName);
    if (target is null)
        return UnknownTarget(replayName);
    var files = paths.SelectMany(p => Directory.Exists(p) ? Directory.GetFiles(p).Order(StringComparer.Ordinal) : (IEnumerable<string>)[p])
        .Where(f => !Path.GetFileName(f).StartsWith("README", StringComparison.Ordinal)).ToList();
    foreach (var file in files)
    {
        var bytes = File.ReadAllBytes(file);
        var run = Task.Factory.StartNew(() => target.Run(bytes), TaskCreationOptions.LongRunning);
        if (Task.WaitAny([run], TimeSpan.FromSeconds(60)) < 0)
        {
            Console.Error.WriteLine($"{target.Name}: HANG (over 60 s) on {file}");
            return 2;
        }

        try
        {
            run.GetAwaiter().GetResult();
        }
        catch (Exception e)
        {
            Console.Error.WriteLine($"{target.Name}: FINDING on {file}:\n{e}");
            return 1;
        }
    }

    Console.WriteLine($"{target.Name}: {files.Count} input(s) replayed, no finding");
    return 0;
}

Console.Error.WriteLine("usage: Dispatch.Fuzz list | run <target> | replay <target> <file-or-dir>... | seeds <corpus-dir>");
return Usage;

static int UnknownTarget(string name)
{
    Console.Error.WriteLine($"unknown target '{name}'; Dispatch.Fuzz list shows them");
    return Usage;
}
