import Foundation
#if canImport(FoundationNetworking)
import FoundationNetworking
#endif
import Logging
import Synchronization
import Testing

/// `scripts/fake-apiserver/server.py`, run as a subprocess on free loopback ports with its own
/// certificates and token in a temp dir. `withFakeAPIServer` stops it and removes the dir
/// whatever the test does.
final class FakeAPIServer: Sendable {
    let directory: URL
    let port: Int
    let controlPort: Int
    private let process: Process

    var certDirectory: String { directory.appendingPathComponent("certs").path }
    var server: String { "https://127.0.0.1:\(port)" }

    struct Failure: Error, CustomStringConvertible {
        var description: String
    }

    /// The repository root, found from this file's path.
    static let root = URL(fileURLWithPath: #filePath).deletingLastPathComponent().deletingLastPathComponent().deletingLastPathComponent()

    /// Certificates made once per test run and copied into each server's dir (RSA key
    /// generation is the slow part of a start).
    private static let sharedCerts: Result<URL, Failure> = {
        let dir = FileManager.default.temporaryDirectory.appendingPathComponent("kubesource-certs-\(getpid())")
        try? FileManager.default.removeItem(at: dir)
        try? FileManager.default.createDirectory(at: dir, withIntermediateDirectories: true)
        // Start and stop a server once: it generates whatever is missing in --cert-dir.
        let process = Process()
        process.executableURL = URL(fileURLWithPath: "/usr/bin/env")
        process.arguments = ["python3", root.appendingPathComponent("scripts/fake-apiserver/server.py").path,
                             "--cert-dir", dir.path, "--port-file", dir.appendingPathComponent("port").path, "--quiet"]
        process.standardOutput = FileHandle.nullDevice
        do { try process.run() } catch { return .failure(Failure(description: "cannot start python3: \(error)")) }
        let deadline = Date().addingTimeInterval(60)
        while !FileManager.default.fileExists(atPath: dir.appendingPathComponent("port").path), Date() < deadline, process.isRunning {
            usleep(50_000)
        }
        kill(process.processIdentifier, SIGKILL)
        process.waitUntilExit()
        for name in ["port", "token", "openssl.cnf"] { try? FileManager.default.removeItem(at: dir.appendingPathComponent(name)) }
        guard FileManager.default.fileExists(atPath: dir.appendingPathComponent("client.key").path) else {
            return .failure(Failure(description: "the fake API server made no certificates"))
        }
        return .success(dir)
    }()

    init(objects: String, bookmarkInterval: Double = 0.2, extraArguments: [String] = []) throws {
        let fm = FileManager.default
        directory = fm.temporaryDirectory.appendingPathComponent("kubesource-\(UUID().uuidString)")
        let certs = directory.appendingPathComponent("certs")
        try fm.createDirectory(at: certs, withIntermediateDirectories: true)
        for file in try fm.contentsOfDirectory(atPath: try Self.sharedCerts.get().path) {
            try fm.copyItem(at: try Self.sharedCerts.get().appendingPathComponent(file), to: certs.appendingPathComponent(file))
        }
        let objectsFile = directory.appendingPathComponent("objects.json")
        try objects.write(to: objectsFile, atomically: true, encoding: .utf8)
        let portFile = directory.appendingPathComponent("port")
        let controlFile = directory.appendingPathComponent("cport")
        process = Process()
        process.executableURL = URL(fileURLWithPath: "/usr/bin/env")
        process.arguments = ["python3", Self.root.appendingPathComponent("scripts/fake-apiserver/server.py").path,
                             "--cert-dir", certs.path, "--port-file", portFile.path, "--control-port-file", controlFile.path,
                             "--bookmark-interval", "\(bookmarkInterval)", "--load", objectsFile.path, "--quiet"] + extraArguments
        process.standardOutput = FileHandle.nullDevice
        process.standardError = FileHandle(forWritingAtPath: "/dev/null")
        try process.run()
        let deadline = Date().addingTimeInterval(30)
        // The port file is written last, after the control port's.
        while !fm.fileExists(atPath: portFile.path) {
            guard process.isRunning, Date() < deadline else {
                kill(process.processIdentifier, SIGKILL)
                process.waitUntilExit()
                try? fm.removeItem(at: directory)
                throw Failure(description: "the fake API server did not start")
            }
            usleep(20_000)
        }
        func number(_ url: URL) throws -> Int {
            guard let port = Int(try String(contentsOf: url, encoding: .utf8).trimmingCharacters(in: .whitespacesAndNewlines)) else {
                throw Failure(description: "bad port file \(url.path)")
            }
            return port
        }
        port = try number(portFile)
        controlPort = try number(controlFile)
    }

    /// SIGKILL: a child of the test runner inherits its blocked signal mask, so SIGTERM would
    /// only stay pending.
    func stop() {
        if process.isRunning {
            kill(process.processIdentifier, SIGKILL)
            process.waitUntilExit()
        }
        try? FileManager.default.removeItem(at: directory)
    }

    /// A control-port command; returns the reply body. Fails the test on a non-200 answer.
    @discardableResult
    func control(_ method: String, _ path: String, body: String = "") async throws -> String {
        var request = URLRequest(url: URL(string: "http://127.0.0.1:\(controlPort)\(path)")!)
        request.httpMethod = method
        if method == "POST" { request.httpBody = Data(body.utf8) }
        request.timeoutInterval = 10
        let (data, response) = try await URLSession.shared.data(for: request)
        let text = String(decoding: data, as: UTF8.self)
        guard (response as? HTTPURLResponse)?.statusCode == 200 else {
            throw Failure(description: "control \(method) \(path) failed: \(text)")
        }
        return text
    }

    func apply(_ objects: String) async throws { try await control("POST", "/apply", body: objects) }

    func delete(_ resource: String, namespace: String = "default", name: String) async throws {
        try await control("POST", "/delete?resource=\(resource)&namespace=\(namespace)&name=\(name)")
    }

    /// A kubeconfig for this server, written to a file: `auth` cert or token, `style` data or files.
    func kubeconfig(auth: String, style: String) async throws -> String {
        let text = try await control("GET", "/kubeconfig?auth=\(auth)&style=\(style)")
        let path = directory.appendingPathComponent("kubeconfig-\(auth)-\(style)").path
        try text.write(toFile: path, atomically: true, encoding: .utf8)
        return path
    }

    /// `GET /stats`, as JSON.
    func stats() async throws -> [String: Any] {
        let text = try await control("GET", "/stats")
        return try JSONSerialization.jsonObject(with: Data(text.utf8)) as? [String: Any] ?? [:]
    }

    /// Requests of `verb` (list, watch, get) for `resource` so far.
    func count(_ resource: String, _ verb: String) async throws -> Int {
        let resources = try await stats()["resources"] as? [String: [String: Int]]
        return resources?[resource]?[verb] ?? -1
    }
}

/// Runs `body` with a started fake API server, and stops it however `body` ends.
func withFakeAPIServer<T>(objects: String, bookmarkInterval: Double = 0.2,
                          _ body: (FakeAPIServer) async throws -> T) async throws -> T {
    let server = try FakeAPIServer(objects: objects, bookmarkInterval: bookmarkInterval)
    do {
        let result = try await body(server)
        server.stop()
        return result
    } catch {
        server.stop()
        throw error
    }
}

/// Polls until `condition` holds, for at most `seconds` (generous: tests run in parallel on 2 cores).
func eventually(_ seconds: Double = 15, _ condition: () async throws -> Bool) async rethrows -> Bool {
    let deadline = ContinuousClock.now + .milliseconds(Int64(seconds * 1000))
    while ContinuousClock.now < deadline {
        if try await condition() { return true }
        try? await Task.sleep(for: .milliseconds(20))
    }
    return try await condition()
}

/// Log records kept for assertions.
final class LogRecorder: Sendable {
    struct Record: Sendable {
        var level: Logger.Level
        var message: String
        var metadata: Logger.Metadata
    }

    private let storage = Mutex<[Record]>([])

    var records: [Record] { storage.withLock { $0 } }

    func count(_ level: Logger.Level, _ message: String) -> Int {
        records.filter { $0.level == level && $0.message.hasPrefix(message) }.count
    }

    var logger: Logger {
        var logger = Logger(label: "test") { _ in Handler(recorder: self) }
        logger.logLevel = .debug
        return logger
    }

    func add(_ record: Record) { storage.withLock { $0.append(record) } }

    struct Handler: LogHandler {
        let recorder: LogRecorder
        var metadata: Logger.Metadata = [:]
        var logLevel: Logger.Level = .debug

        subscript(metadataKey key: String) -> Logger.Metadata.Value? {
            get { metadata[key] }
            set { metadata[key] = newValue }
        }

        func log(event: LogEvent) {
            recorder.add(Record(level: event.level, message: "\(event.message)", metadata: event.metadata ?? [:]))
        }
    }
}
