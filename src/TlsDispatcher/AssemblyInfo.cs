using System.Runtime.CompilerServices;

[assembly: InternalsVisibleTo("Dispatch.TlsDispatcher.Tests")]
[assembly: InternalsVisibleTo("Dispatch.Fuzz")]
