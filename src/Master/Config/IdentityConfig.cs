using Dispatch.Wire.Payloads;

namespace Dispatch.Master.Config;

/// <summary>An identity vhost's credentials: the file, the realm, each enabled login's hash and pool, the limits on failed logins.</summary>
internal sealed record IdentityConfig(string CredentialsPath, string Realm, ValueList<IdentityLogin> Users, int FailuresPerAddress, int FailuresPerLogin, TimeSpan FailureWindow);
