namespace Dispatch.Master.Config;

internal sealed record SecurityConfig(uint MinUid);
