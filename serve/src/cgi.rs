//! The WAGI convention between `kiln serve` and its guest, which is CGI (RFC 3875) for WASI
//! programs: the request line and headers arrive as environment variables, the body on stdin;
//! the guest writes CGI response headers, a blank line and the body to stdout.

use std::borrow::Cow;
use std::net::SocketAddr;

use hyper::http::{HeaderName, HeaderValue, StatusCode};

/// What the guest learns of a request besides its body.
pub struct RequestInfo {
    pub method: String,
    /// The path, percent-encoded as received.
    pub path: String,
    pub query: String,
    /// `HTTP/1.1`, ...
    pub protocol: String,
    pub headers: Vec<(String, Vec<u8>)>,
    pub body_len: usize,
    pub remote: SocketAddr,
    pub local: SocketAddr,
}

/// The CGI environment of a request, as `(name, value)` pairs. Header values that are not
/// UTF-8 are left out (WASI's environment is strings).
pub fn environment(request: &RequestInfo) -> Vec<(Cow<'static, str>, Cow<'_, str>)> {
    let remote = request.remote.ip().to_string();
    let mut env: Vec<(Cow<'static, str>, Cow<'_, str>)> = Vec::with_capacity(16 + request.headers.len());
    env.extend([
        ("GATEWAY_INTERFACE".into(), "CGI/1.1".into()),
        ("SERVER_SOFTWARE".into(), concat!("kiln/", env!("CARGO_PKG_VERSION")).into()),
        ("SERVER_PROTOCOL".into(), request.protocol.as_str().into()),
        ("SERVER_NAME".into(), request.local.ip().to_string().into()),
        ("SERVER_PORT".into(), request.local.port().to_string().into()),
        ("REQUEST_METHOD".into(), request.method.as_str().into()),
        ("SCRIPT_NAME".into(), "".into()),
        ("PATH_INFO".into(), request.path.as_str().into()),
        ("X_RAW_PATH_INFO".into(), request.path.as_str().into()),
        ("QUERY_STRING".into(), request.query.as_str().into()),
        ("REMOTE_ADDR".into(), remote.clone().into()),
        ("REMOTE_HOST".into(), remote.into()),
        ("CONTENT_LENGTH".into(), request.body_len.to_string().into()),
    ]);
    for (name, value) in &request.headers {
        let Ok(value) = std::str::from_utf8(value) else { continue };
        let key: Cow<'static, str> = match name.as_str() {
            // RFC 3875 gives these two their own names.
            "content-type" => "CONTENT_TYPE".into(),
            "content-length" => continue,
            // Credentials stay with the server (as RFC 3875 recommends).
            "authorization" | "proxy-authorization" => continue,
            _ => format!("HTTP_{}", name.to_ascii_uppercase().replace('-', "_")).into(),
        };
        match env.iter_mut().find(|(k, _)| *k == key) {
            // Repeated headers are joined, as HTTP allows for lists.
            Some((_, existing)) => {
                let existing = existing.to_mut();
                existing.push_str(", ");
                existing.push_str(value);
            }
            None => env.push((key, value.into())),
        }
    }
    env
}

/// The response a guest wrote: status, headers and body.
#[derive(Debug, PartialEq)]
pub struct Response {
    pub status: StatusCode,
    pub headers: Vec<(HeaderName, HeaderValue)>,
    pub body: Vec<u8>,
}

impl Response {
    /// The HTTP response.
    pub fn into_http(self) -> hyper::Response<http_body_util::Full<bytes::Bytes>> {
        let mut http = hyper::Response::new(http_body_util::Full::new(bytes::Bytes::from(self.body)));
        *http.status_mut() = self.status;
        for (name, value) in self.headers {
            http.headers_mut().append(name, value);
        }
        http
    }
}

/// Why a guest's output is not a CGI response.
#[derive(Debug, PartialEq, thiserror::Error)]
pub enum MalformedOutput {
    #[error("no blank line ends the CGI headers")]
    NoHeaderEnd,
    #[error("a CGI header line has no colon: {0:?}")]
    NoColon(String),
    #[error("not a valid header: {0:?}")]
    BadHeader(String),
    #[error("not a valid Status header: {0:?}")]
    BadStatus(String),
}

/// Most bytes of CGI headers a guest may write before its blank line.
const MAX_HEADER_BYTES: usize = 64 * 1024;

/// Parses a guest's stdout: CGI header lines (ended by `\n` or `\r\n`) up to a blank line,
/// then the body. `Status: CODE [REASON]` sets the status (default 200, or 302 with a
/// `Location` and no `Status`); every other header is passed on.
pub fn parse_output(output: &[u8]) -> Result<Response, MalformedOutput> {
    let mut status = None;
    let mut headers = Vec::new();
    let mut rest = output;
    loop {
        let Some(end) = rest.iter().position(|&b| b == b'\n') else { return Err(MalformedOutput::NoHeaderEnd) };
        if output.len() - rest.len() > MAX_HEADER_BYTES {
            return Err(MalformedOutput::NoHeaderEnd);
        }
        let line = &rest[..end];
        let line = line.strip_suffix(b"\r").unwrap_or(line);
        rest = &rest[end + 1..];
        if line.is_empty() {
            break;
        }
        let text = String::from_utf8_lossy(line);
        let Some((name, value)) = text.split_once(':') else { return Err(MalformedOutput::NoColon(text.into_owned())) };
        let value = value.trim();
        if name.eq_ignore_ascii_case("status") {
            let code = value.split(' ').next().unwrap_or("");
            let code = code
                .parse::<u16>()
                .ok()
                .and_then(|c| StatusCode::from_u16(c).ok())
                .ok_or_else(|| MalformedOutput::BadStatus(value.to_string()))?;
            status = Some(code);
            continue;
        }
        let name = HeaderName::from_bytes(name.as_bytes()).map_err(|_| MalformedOutput::BadHeader(text.to_string()))?;
        let value = HeaderValue::from_str(value).map_err(|_| MalformedOutput::BadHeader(text.to_string()))?;
        headers.push((name, value));
    }
    let redirect = headers.iter().any(|(n, _)| n == hyper::header::LOCATION);
    let status = status.unwrap_or(if redirect { StatusCode::FOUND } else { StatusCode::OK });
    Ok(Response { status, headers, body: rest.to_vec() })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn request() -> RequestInfo {
        RequestInfo {
            method: "POST".into(),
            path: "/hello/world".into(),
            query: "a=1&b=2".into(),
            protocol: "HTTP/1.1".into(),
            headers: vec![
                ("content-type".into(), b"text/plain".to_vec()),
                ("x-thing".into(), b"one".to_vec()),
                ("x-thing".into(), b"two".to_vec()),
                ("authorization".into(), b"secret".to_vec()),
                ("x-binary".into(), vec![0xff]),
            ],
            body_len: 5,
            remote: "127.0.0.1:5000".parse().unwrap(),
            local: "127.0.0.1:8080".parse().unwrap(),
        }
    }

    #[test]
    fn the_environment_carries_the_request_line_and_headers() {
        let request = request();
        let env = environment(&request);
        let get = |k: &str| env.iter().find(|(n, _)| n == k).map(|(_, v)| v.as_ref());
        assert_eq!(get("REQUEST_METHOD"), Some("POST"));
        assert_eq!(get("PATH_INFO"), Some("/hello/world"));
        assert_eq!(get("QUERY_STRING"), Some("a=1&b=2"));
        assert_eq!(get("CONTENT_LENGTH"), Some("5"));
        assert_eq!(get("CONTENT_TYPE"), Some("text/plain"));
        assert_eq!(get("HTTP_X_THING"), Some("one, two"));
        assert_eq!(get("SERVER_PORT"), Some("8080"));
        assert_eq!(get("HTTP_AUTHORIZATION"), None);
        assert_eq!(get("HTTP_X_BINARY"), None);
    }

    #[test]
    fn cgi_output_becomes_a_response() {
        let r = parse_output(b"Content-Type: text/plain\r\nStatus: 404 Not Found\r\n\r\nnope").unwrap();
        assert_eq!((r.status, r.body.as_slice()), (StatusCode::NOT_FOUND, &b"nope"[..]));
        assert_eq!(r.headers, vec![(hyper::header::CONTENT_TYPE, HeaderValue::from_static("text/plain"))]);
        let r = parse_output(b"Location: /elsewhere\n\n").unwrap();
        assert_eq!((r.status, r.body.len()), (StatusCode::FOUND, 0));
        let r = parse_output(b"\nbody only").unwrap();
        assert_eq!((r.status, r.body.as_slice()), (StatusCode::OK, &b"body only"[..]));
    }

    #[test]
    fn malformed_output_is_an_error_not_a_response() {
        assert_eq!(parse_output(b"Content-Type: text/plain\n"), Err(MalformedOutput::NoHeaderEnd));
        assert_eq!(parse_output(b""), Err(MalformedOutput::NoHeaderEnd));
        assert!(matches!(parse_output(b"no colon here\n\n"), Err(MalformedOutput::NoColon(_))));
        assert!(matches!(parse_output(b"Status: banana\n\n"), Err(MalformedOutput::BadStatus(_))));
        assert!(matches!(parse_output(b"Status: 99\n\n"), Err(MalformedOutput::BadStatus(_))));
        assert!(matches!(parse_output(b"Bad Name: x\n\n"), Err(MalformedOutput::BadHeader(_))));
        assert!(matches!(parse_output(b"X: a\x01b\n\n"), Err(MalformedOutput::BadHeader(_))));
        let endless = vec![b'a'; MAX_HEADER_BYTES * 2];
        assert_eq!(parse_output(&endless), Err(MalformedOutput::NoHeaderEnd));
    }
}
