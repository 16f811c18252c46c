using System.Text;
using Microsoft.AspNetCore.Http;

namespace Dispatch.Worker.Http;

/// <summary>
/// What a gateway of the worker (the reverse proxy, FastCGI) answers when the tenant's application cannot be reached or
/// does not answer: one text each, so that a client reads the same 502 or 504 whichever gateway the vhost uses.
/// </summary>
internal static class GatewayAnswers
{
    /// <summary>502: the application is unavailable, no more said.</summary>
    public static readonly byte[] Unavailable = Encoding.UTF8.GetBytes("Bad Gateway: the application is unavailable\n");

    /// <summary>502: the application answered something that is not a valid response.</summary>
    public static readonly byte[] InvalidResponse = Encoding.UTF8.GetBytes("Bad Gateway: the application sent no valid response\n");

    /// <summary>504: connected, but no answer within the read timeout.</summary>
    public static readonly byte[] ReadTimeout = Encoding.UTF8.GetBytes("Gateway Timeout: the application did not answer in time\n");

    private static readonly byte[] Refused = Encoding.UTF8.GetBytes("Bad Gateway: the application is unavailable (connection refused)\n");
    private static readonly byte[] Missing = Encoding.UTF8.GetBytes("Bad Gateway: the application is unavailable (not running)\n");
    private static readonly byte[] Denied = Encoding.UTF8.GetBytes("Bad Gateway: the application is unavailable (connection not permitted)\n");
    private static readonly byte[] ConnectTimeout = Encoding.UTF8.GetBytes("Gateway Timeout: the application did not accept the connection in time\n");

    /// <summary>The status and body for a connection to the application that failed (504 on a timeout, else 502 saying why).</summary>
    public static (int Status, byte[] Body) ForConnect(ConnectFailure failure) => failure switch
    {
        ConnectFailure.Timeout => (StatusCodes.Status504GatewayTimeout, ConnectTimeout),
        ConnectFailure.Refused => (StatusCodes.Status502BadGateway, Refused),
        ConnectFailure.Missing => (StatusCodes.Status502BadGateway, Missing),
        ConnectFailure.Denied => (StatusCodes.Status502BadGateway, Denied),
        _ => (StatusCodes.Status502BadGateway, Unavailable),
    };
}
