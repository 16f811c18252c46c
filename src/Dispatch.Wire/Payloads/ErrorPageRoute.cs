namespace Dispatch.Wire.Payloads;

/// <summary>For responses of <paramref name="Status"/> the worker generates itself, the file at URL path <paramref name="Path"/> under the vhost's root.</summary>
public sealed record ErrorPageRoute(int Status, string Path);
