using Dispatch.Wire.Payloads;

namespace Dispatch.Master.Certificates;

/// <summary>A certificate chain and its key, read and checked by the master for a terminated vhost.</summary>
internal sealed record LoadedCertificate(string Directory, string ChainPem, string KeyPem, string Subject, string KeyType, DateTime NotAfter, string Serial, ValueList<string> DnsNames);
