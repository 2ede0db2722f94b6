import Foundation
#if canImport(Glibc)
import Glibc
#elseif canImport(Darwin)
import Darwin
#endif

/// A minimal HTTP/1.1 client over a plain loopback TCP socket: enough to read what the servers
/// put on the wire (status line, headers, body) without trusting any HTTP library.
struct Response: CustomStringConvertible {
    var status: Int
    var headers: [(name: String, value: String)]
    var body: String

    func header(_ name: String) -> String? {
        headers.first { $0.name.lowercased() == name.lowercased() }?.value
    }

    var description: String { "HTTP \(status) \(headers) \(body)" }
}

struct ClientError: Error, CustomStringConvertible {
    var description: String
}

/// One TCP connection to 127.0.0.1:port, with a 5 s receive timeout so a test never hangs.
final class Connection {
    private let fd: Int32
    private var buffer: [UInt8] = []

    /// `errno` of a failed connect, e.g. ECONNREFUSED once a listener is closed.
    static func connectError(port: Int) -> Int32? {
        do {
            _ = try Connection(port: port)
            return nil
        } catch {
            return error.errno
        }
    }

    struct ConnectError: Error { var errno: Int32 }

    init(port: Int) throws(ConnectError) {
        #if canImport(Glibc)
        fd = socket(AF_INET, Int32(SOCK_STREAM.rawValue), 0)
        #else
        fd = socket(AF_INET, SOCK_STREAM, 0)
        #endif
        // Generous: the suite runs beside kernel tests that load 10k services and starve event loops.
        var timeout = timeval(tv_sec: 20, tv_usec: 0)
        setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &timeout, socklen_t(MemoryLayout<timeval>.size))
        var address = sockaddr_in()
        address.sin_family = sa_family_t(AF_INET)
        address.sin_port = in_port_t(UInt16(port).bigEndian)
        address.sin_addr.s_addr = UInt32(0x7F00_0001).bigEndian
        let result = withUnsafePointer(to: &address) {
            $0.withMemoryRebound(to: sockaddr.self, capacity: 1) { connect(fd, $0, socklen_t(MemoryLayout<sockaddr_in>.size)) }
        }
        if result != 0 {
            let error = errno
            close(fd)
            throw ConnectError(errno: error)
        }
    }

    deinit { close(fd) }

    func send(_ text: String) throws {
        let bytes = Array(text.utf8)
        var sent = 0
        while sent < bytes.count {
            let n = bytes[sent...].withUnsafeBytes { write(fd, $0.baseAddress, $0.count) }
            guard n > 0 else { throw ClientError(description: "write failed: errno \(errno)") }
            sent += n
        }
    }

    /// Reads more bytes; false at end of stream.
    private func fill() throws -> Bool {
        var chunk = [UInt8](repeating: 0, count: 4096)
        let n = chunk.withUnsafeMutableBytes { read(fd, $0.baseAddress, $0.count) }
        if n < 0 { throw ClientError(description: "read failed: errno \(errno)") }
        buffer += chunk[0..<n]
        return n > 0
    }

    /// Reads one response framed by Content-Length (or, without it, by the end of the stream).
    func readResponse(headOnly: Bool = false) throws -> Response {
        let separator: [UInt8] = Array("\r\n\r\n".utf8)
        var headEnd: Int?
        while headEnd == nil {
            headEnd = buffer.indices.dropLast(3).first { Array(buffer[$0..<$0 + 4]) == separator }
            if headEnd == nil, try !fill() { throw ClientError(description: "connection closed before a full response head") }
        }
        let head = String(decoding: buffer[..<headEnd!], as: UTF8.self).components(separatedBy: "\r\n")
        buffer.removeFirst(headEnd! + 4)
        let statusLine = head[0].split(separator: " ")
        guard statusLine.count >= 2, statusLine[0].hasPrefix("HTTP/1."), let status = Int(statusLine[1]) else {
            throw ClientError(description: "bad status line \(head[0])")
        }
        let headers = head.dropFirst().map { line -> (String, String) in
            let parts = line.split(separator: ":", maxSplits: 1)
            return (String(parts[0]), parts.count > 1 ? String(parts[1].drop { $0 == " " }) : "")
        }
        var response = Response(status: status, headers: headers.map { (name: $0.0, value: $0.1) }, body: "")
        if headOnly { return response }
        if let length = response.header("Content-Length").flatMap(Int.init) {
            while buffer.count < length {
                if try !fill() { throw ClientError(description: "connection closed inside the body") }
            }
            response.body = String(decoding: buffer[..<length], as: UTF8.self)
            buffer.removeFirst(length)
        } else {
            while try fill() {}
            response.body = String(decoding: buffer, as: UTF8.self)
            buffer = []
        }
        return response
    }

    /// True when the server has closed the connection (read returns end of stream).
    func isClosedByPeer() throws -> Bool {
        try buffer.isEmpty && !fill()
    }
}

/// Sends one request on a fresh connection and reads the answer.
func request(_ path: String, port: Int, method: String = "GET") throws -> Response {
    let connection: Connection
    do {
        connection = try Connection(port: port)
    } catch {
        throw ClientError(description: "cannot connect to 127.0.0.1:\(port): errno \(error.errno)")
    }
    try connection.send("\(method) \(path) HTTP/1.1\r\nHost: 127.0.0.1:\(port)\r\nConnection: close\r\n\r\n")
    return try connection.readResponse(headOnly: method == "HEAD")
}

/// Ports that nothing listens on right now, all different: each bound to 127.0.0.1:0, read
/// back, and released together.
func freePorts(_ count: Int) -> [Int] {
    var fds: [Int32] = []
    defer { fds.forEach { close($0) } }
    return (0..<count).map { _ in
        #if canImport(Glibc)
        let fd = socket(AF_INET, Int32(SOCK_STREAM.rawValue), 0)
        #else
        let fd = socket(AF_INET, SOCK_STREAM, 0)
        #endif
        fds.append(fd)
        var address = sockaddr_in()
        address.sin_family = sa_family_t(AF_INET)
        address.sin_addr.s_addr = UInt32(0x7F00_0001).bigEndian
        var length = socklen_t(MemoryLayout<sockaddr_in>.size)
        _ = withUnsafeMutablePointer(to: &address) {
            $0.withMemoryRebound(to: sockaddr.self, capacity: 1) { pointer in
                bind(fd, pointer, length)
                return getsockname(fd, pointer, &length)
            }
        }
        return Int(UInt16(bigEndian: address.sin_port))
    }
}

/// Bytes waiting, unread, in the receive queues of the established server-side sockets of
/// 127.0.0.1:`port` (from /proc/net/tcp); nil when there is no such socket yet. Zero once the
/// server has accepted the connection and read everything sent to it.
func unreadBytes(atServerPort port: Int) -> Int? {
    // Read to the end: a /proc file reports size 0, and one read returns a page of it at most.
    let fd = open("/proc/net/tcp", O_RDONLY)
    guard fd >= 0 else { return nil }
    defer { close(fd) }
    var bytes: [UInt8] = []
    var chunk = [UInt8](repeating: 0, count: 65536)
    while true {
        let count = chunk.withUnsafeMutableBytes { read(fd, $0.baseAddress, $0.count) }
        guard count > 0 else { break }
        bytes += chunk[..<count]
    }
    let table = String(decoding: bytes, as: UTF8.self)
    let local = String(format: "0100007F:%04X", port)
    var total: Int?
    for line in table.split(separator: "\n").dropFirst() {
        // sl local_address rem_address st tx_queue:rx_queue …
        let fields = line.split(separator: " ")
        guard fields.count > 4, fields[1] == local, fields[3] == "01",
              let rx = fields[4].split(separator: ":").last, let bytes = Int(rx, radix: 16) else { continue }
        total = (total ?? 0) + bytes
    }
    return total
}
