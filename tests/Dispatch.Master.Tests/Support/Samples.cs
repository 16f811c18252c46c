using System.Net;
using System.Reflection;
using Dispatch.Wire.Payloads;

namespace Dispatch.Master.Tests.Support;

/// <summary>
/// Builds a value of any config or projection record by reflection, every field set (no defaults, no nulls): seed 1
/// and seed 2 give values that differ in every field. <see cref="Fields"/> and <see cref="Vary"/> change one field at a
/// time, so that tests cover every field a record has, including the ones added after the test was written.
/// </summary>
internal static class Samples
{
    /// <summary>
    /// Fields whose type is wider than what they may hold, which the payload parsers refuse otherwise (an enumerated word,
    /// an HTTP status): a valid value per seed, seeds 1 and 2 different. Keyed by record type and field.
    /// </summary>
    private static readonly Dictionary<string, Func<int, object>> Valid = new(StringComparer.Ordinal)
    {
        [$"{nameof(VhostRoute)}.{nameof(VhostRoute.TlsMode)}"] = seed => TlsModes.All[seed % TlsModes.All.Count],
        [$"{nameof(VhostRoute)}.{nameof(VhostRoute.HttpMode)}"] = seed => HttpModes.All[seed % HttpModes.All.Count],
        [$"{nameof(VhostRoute)}.{nameof(VhostRoute.Engine)}"] = seed => TlsEngines.All[seed % TlsEngines.All.Count],
        [$"{nameof(CompressionRoute)}.{nameof(CompressionRoute.Level)}"] = seed => VhostWebRules.CompressionLevels[seed % VhostWebRules.CompressionLevels.Length],
        [$"{nameof(WorkerVhost)}.{nameof(WorkerVhost.AccessLogFormat)}"] = seed => WorkerVhost.AccessLogFormats[seed % WorkerVhost.AccessLogFormats.Length],
        [$"{nameof(ErrorPageRoute)}.{nameof(ErrorPageRoute.Status)}"] = seed => VhostWebRules.MinErrorStatus + seed,
        [$"{nameof(RedirectRoute)}.{nameof(RedirectRoute.Status)}"] = seed => VhostWebRules.RedirectStatuses[seed % VhostWebRules.RedirectStatuses.Length],
        // Host names (HostNames.IsValidPattern); a snapshot's default is its vhost's name (seed 1's) or none.
        [$"{nameof(VhostRoute)}.{nameof(VhostRoute.Name)}"] = seed => $"vhost{seed}.example",
        [$"{nameof(VhostRoute)}.{nameof(VhostRoute.Aliases)}"] = seed => (ValueList<string>)[$"alias{seed}.example"],
        [$"{nameof(WorkerVhost)}.{nameof(WorkerVhost.Name)}"] = seed => $"vhost{seed}.example",
        [$"{nameof(WorkerVhost)}.{nameof(WorkerVhost.Aliases)}"] = seed => (ValueList<string>)[$"*.alias{seed}.example"],
        [$"{nameof(RouteSnapshot)}.{nameof(RouteSnapshot.DefaultVhost)}"] = seed => seed == 1 ? "vhost1.example" : null!,
    };

    public static T Make<T>(int seed) => (T)Make(typeof(T), seed, typeof(T).Name);

    public static object Make(Type type, int seed, string path)
    {
        if (Nullable.GetUnderlyingType(type) is { } underlying)
            return Make(underlying, seed, path);
        if (type == typeof(string))
            return $"/sample{seed}/{path}";
        if (type == typeof(bool))
            return seed % 2 == 1;
        if (type == typeof(int))
            return 1000 + seed;
        if (type == typeof(long))
            return 2000L + seed;
        if (type == typeof(uint))
            return 3000u + (uint)seed;
        if (type == typeof(ulong))
            return 4000UL + (ulong)seed;
        if (type == typeof(ushort))
            return (ushort)(5000 + seed);
        if (type == typeof(byte))
            return (byte)seed;
        if (type == typeof(TimeSpan))
            return TimeSpan.FromSeconds(seed);
        if (type == typeof(DateTime))
            return new DateTime(2026, 1, seed, 0, 0, 0, DateTimeKind.Utc);
        if (type == typeof(IPEndPoint))
            return new IPEndPoint(IPAddress.Loopback, 6000 + seed);
        if (type == typeof(ProxyUpstream))
            return ProxyUpstream.TryParse($"http://127.0.0.1:{7000 + seed}", out var upstream, out var problem) ? upstream : throw new InvalidOperationException(problem);
        if (type == typeof(ValueDictionary))
            return new ValueDictionary([new($"key{seed}", $"value{seed}")]);
        if (type.IsEnum)
            return Enum.GetValues(type).GetValue(seed % Enum.GetValues(type).Length)!;
        if (type.IsGenericType && type.GetGenericTypeDefinition() == typeof(ValueList<>))
        {
            var element = type.GetGenericArguments()[0];
            var items = Array.CreateInstance(element, 1);
            items.SetValue(Make(element, seed, path), 0);
            return type.GetMethod(nameof(ValueList<int>.FromArray))!.Invoke(null, [items])!;
        }

        if (type.IsInterface || type.IsArray)
            throw new InvalidOperationException($"{path}: {type} is not a value-equal type (use ValueList<T> or ValueDictionary)");
        return Build(type, seed, path, varied: null);
    }

    /// <summary>The fields of a record: its constructor's parameters and its other settable (init) properties.</summary>
    public static IReadOnlyList<string> Fields(Type type)
    {
        var ctor = Constructor(type);
        var parameters = ctor.GetParameters().Select(p => p.Name!).ToList();
        return [.. parameters, .. InitProperties(type, parameters).Select(p => p.Name)];
    }

    /// <summary>The seed-1 value of <paramref name="type"/> with only <paramref name="field"/> taken from seed 2.</summary>
    public static object Vary(Type type, string field) => Build(type, 1, type.Name, field);

    private static object Build(Type type, int seed, string path, string? varied)
    {
        var ctor = Constructor(type);
        var parameters = ctor.GetParameters();
        var args = parameters.Select(p => Field(type, p.Name!, p.ParameterType, p.Name == varied ? 2 : seed, path)).ToArray();
        var value = ctor.Invoke(args);
        foreach (var property in InitProperties(type, [.. parameters.Select(p => p.Name!)]))
            property.SetValue(value, Field(type, property.Name, property.PropertyType, property.Name == varied ? 2 : seed, path));
        return value;
    }

    private static object Field(Type record, string name, Type type, int seed, string path) =>
        Valid.TryGetValue($"{record.Name}.{name}", out var valid) ? valid(seed) : Make(type, seed, $"{path}.{name}");

    private static ConstructorInfo Constructor(Type type) =>
        type.GetConstructors().OrderByDescending(c => c.GetParameters().Length).FirstOrDefault()
        ?? throw new InvalidOperationException($"{type} has no public constructor");

    private static IEnumerable<PropertyInfo> InitProperties(Type type, IReadOnlyList<string> parameters) =>
        type.GetProperties(BindingFlags.Public | BindingFlags.Instance)
            .Where(p => p.SetMethod is { IsPublic: true } && !parameters.Contains(p.Name, StringComparer.OrdinalIgnoreCase));
}
