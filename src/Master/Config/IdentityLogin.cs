namespace Dispatch.Master.Config;

/// <summary>A login of an identity vhost, its hash and the pool that serves it.</summary>
internal sealed record IdentityLogin(string Login, string Hash, string Pool);
