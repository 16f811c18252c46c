namespace Dispatch.Worker.Tests.Support;

/// <summary>A small PHP front-controller application and a php-fpm started by the test (as the operator would).</summary>
internal static class PhpApp
{
    public const string PhpFpm = "/usr/sbin/php-fpm8.2";

    /// <summary>index.php: routes every path (WordPress-style permalinks), hashes a POST body as it streams in.</summary>
    public const string Index = """
        <?php
        if ($_SERVER['REQUEST_METHOD'] === 'POST') {
            $in = fopen('php://input', 'rb');
            $hash = hash_init('sha256');
            $n = 0;
            while (!feof($in)) { $chunk = fread($in, 1 << 16); $n += strlen($chunk); hash_update($hash, $chunk); }
            echo "posted $n " . hash_final($hash) . "\n";
            exit;
        }
        $path = parse_url($_SERVER['REQUEST_URI'], PHP_URL_PATH);
        if (preg_match('#^/(\d{4})/([a-z0-9-]+)$#', $path, $m)) {
            header('X-Route: post');
            echo "post {$m[2]} of {$m[1]}\n";
        } else {
            http_response_code(404);
            echo "no route for $path\n";
        }
        echo "script={$_SERVER['SCRIPT_NAME']} uri={$_SERVER['REQUEST_URI']} uid=" . posix_getuid() . "\n";
        """;

    /// <summary>info.php: PATH_INFO, the uid and what the script can read (files given as ?read=a,b).</summary>
    public const string Info = """
        <?php
        header('Content-Type: text/plain');
        echo "uid=" . posix_getuid() . " pid=" . getmypid() . "\n";
        echo "path_info=" . ($_SERVER['PATH_INFO'] ?? '') . "\n";
        echo "https=" . ($_SERVER['HTTPS'] ?? '') . " remote=" . $_SERVER['REMOTE_ADDR'] . " server=" . $_SERVER['SERVER_NAME'] . "\n";
        foreach (array_filter(explode(',', $_GET['read'] ?? '')) as $f) {
            $data = @file_get_contents($f);
            echo "read $f: " . ($data === false ? "denied" : "READ " . strlen($data)) . "\n";
        }
        error_log("info.php was here");
        """;

    /// <summary>Files of the application's document root.</summary>
    public static Dictionary<string, string> Files => new()
    {
        ["index.php"] = Index,
        ["info.php"] = Info,
        ["style.css"] = "body { color: green }",
        ["docs/index.html"] = "docs index",
    };
}
