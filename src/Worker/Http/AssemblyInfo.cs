using System.Runtime.CompilerServices;

[assembly: InternalsVisibleTo("Dispatch.Worker.Tests")]
