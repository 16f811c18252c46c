namespace Dispatch.Wire;

// The bounds of the wire layouts unless a layout says otherwise: names 255 bytes, paths 4096, texts 8192, lists 1024 entries.

internal static class Limits
{
    public const int Name = 255;
    public const int Path = 4096;
    public const int Text = 8192;
    public const int List = 1024;
}
