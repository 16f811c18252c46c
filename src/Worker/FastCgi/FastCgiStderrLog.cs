using System.Text;

namespace Dispatch.Worker.FastCgi;

/// <summary>
/// Turns an application's FCGI_STDERR bytes (or a spawned php-fpm's stderr pipe) into log lines, as the CGI handler
/// does with a script's stderr: split at LF (a CR before it dropped), each line at most <see cref="MaxLineBytes"/>
/// (the rest dropped, marked "[truncated]"), control characters replaced by '?', at most <see cref="MaxLines"/> lines
/// per request or stream (one notice after that).
/// </summary>
internal sealed class FastCgiStderrLog(Action<string, bool> emit, Action tooMany, int maxLines = FastCgiStderrLog.MaxLines)
{
    public const int MaxLineBytes = 2048;
    public const int MaxLines = 200;

    private readonly byte[] _line = new byte[MaxLineBytes];
    private int _length;
    private bool _truncated;
    private int _lines;

    /// <summary>Lines passed to the logger so far.</summary>
    public int Lines => Math.Min(_lines, maxLines);

    public void Write(ReadOnlySpan<byte> data)
    {
        foreach (var b in data)
        {
            if (b == '\n')
            {
                Flush();
            }
            else if (_length < _line.Length)
            {
                _line[_length++] = b;
            }
            else
            {
                _truncated = true;
            }
        }
    }

    /// <summary>Emits a last line without its LF, if any.</summary>
    public void Complete()
    {
        if (_length > 0 || _truncated)
        {
            Flush();
        }
    }

    /// <summary>Replaces control characters (except tab) by '?': no forged log lines, no terminal escapes.</summary>
    public static string Sanitize(ReadOnlySpan<byte> raw)
    {
        var text = Encoding.UTF8.GetString(raw);
        return string.Create(text.Length, text, static (span, source) =>
        {
            for (var i = 0; i < source.Length; i++)
            {
                var c = source[i];
                span[i] = char.IsControl(c) && c != '\t' ? '?' : c;
            }
        });
    }

    private void Flush()
    {
        var raw = _line.AsSpan(0, _length);
        if (raw.EndsWith("\r"u8))
        {
            raw = raw[..^1];
        }

        var truncated = _truncated;
        _length = 0;
        _truncated = false;
        _lines++;
        if (_lines > maxLines)
        {
            if (_lines == maxLines + 1)
            {
                tooMany();
            }

            return;
        }

        emit(Sanitize(raw), truncated);
    }
}
