using System.Text;

namespace Dispatch.Platform.Modules;

/// <summary>
/// A third-party privilege module: a native shared library (C, or C# published with NativeAOT...)
/// exporting exactly the two functions of the module ABI (docs/modules.md):
/// <code>
/// int validate(const char *config_json, char *error_buffer, size_t length);
/// int apply(const char *config_json, char *error_buffer, size_t length);
/// </code>
/// <c>config_json</c> is the pool's settings for the module, NUL-terminated UTF-8 JSON; 0 means
/// success, anything else failure with a NUL-terminated UTF-8 message in <c>error_buffer</c>
/// (<c>length</c> bytes, zeroed before the call). <c>validate</c> runs in the master at config load,
/// <c>apply</c> in the worker's stage 1 (root, main thread). Loaded by <see cref="ModuleLoader"/>.
/// </summary>
public sealed unsafe class PrivilegeModule
{
    /// <summary>Bytes of the error buffer handed to the module (a message is cut at length - 1 bytes).</summary>
    public const int ErrorBufferLength = 1024;

    private readonly delegate* unmanaged<byte*, byte*, nuint, int> _validate;
    private readonly delegate* unmanaged<byte*, byte*, nuint, int> _apply;

    internal PrivilegeModule(string library, nint validate, nint apply)
    {
        Library = library;
        _validate = (delegate* unmanaged<byte*, byte*, nuint, int>)validate;
        _apply = (delegate* unmanaged<byte*, byte*, nuint, int>)apply;
    }

    /// <summary>The library's path, as configured (it was loaded from the descriptor that was checked).</summary>
    public string Library { get; }

    /// <summary>Calls <c>validate</c>: null when the settings are fine, else the module's message.</summary>
    public string? Validate(string settingsJson) => Call(_validate, "validate", settingsJson);

    /// <summary>Calls <c>apply</c> on the calling thread: null when done, else the module's message.</summary>
    public string? Apply(string settingsJson) => Call(_apply, "apply", settingsJson);

    private static string? Call(delegate* unmanaged<byte*, byte*, nuint, int> function, string name, string settingsJson)
    {
        var json = Encoding.UTF8.GetBytes(settingsJson + "\0");
        var error = new byte[ErrorBufferLength];
        int status;
        fixed (byte* j = json)
        fixed (byte* e = error)
            status = function(j, e, (nuint)error.Length);
        if (status == 0)
            return null;
        var end = Array.IndexOf(error, (byte)0);
        var message = Printable(Encoding.UTF8.GetString(error, 0, end < 0 ? error.Length : end));
        return message.Length > 0 ? message : $"{name} returned {status} without a message";
    }

    /// <summary>The message as one line: control characters (a forged log line, an escape sequence) become '?'.</summary>
    private static string Printable(string message) =>
        string.Create(message.Length, message, static (span, m) =>
        {
            for (var i = 0; i < m.Length; i++)
                span[i] = char.IsControl(m[i]) ? '?' : m[i];
        }).Trim();
}
