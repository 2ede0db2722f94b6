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

    /// The fixture's certificates, made once and kept in one temp dir for later runs (RSA key
    /// generation is the slow part of a start); each server gets a copy.
    private static let sharedCerts = SharedCerts()

    private actor SharedCerts {
        private var making: Task<URL, any Error>?

        func directory() async throws -> URL {
            if making == nil { making = Task { try await Self.make() } }
            return try await making!.value
        }

        private static func make() async throws -> URL {
            let fm = FileManager.default
            let kept = fm.temporaryDirectory.appendingPathComponent("nftproxy-kubesource-test-certs")
            let files = ["ca.crt", "ca.key", "server.crt", "server.key", "client.crt", "client.key"]
            if files.allSatisfy({ fm.fileExists(atPath: kept.appendingPathComponent($0).path) }) { return kept }
            // Start a server once in a new dir: it makes whatever is missing in --cert-dir.
            let fresh = fm.temporaryDirectory.appendingPathComponent("kubesource-certs-\(UUID().uuidString)")
            try fm.createDirectory(at: fresh, withIntermediateDirectories: true)
            let portFile = fresh.appendingPathComponent("port")
            let process = Process()
            process.executableURL = URL(fileURLWithPath: "/usr/bin/env")
            process.arguments = ["python3", root.appendingPathComponent("scripts/fake-apiserver/server.py").path,
                                 "--cert-dir", fresh.path, "--port-file", portFile.path, "--quiet"]
            process.standardOutput = FileHandle.nullDevice
            try process.run()
            let deadline = ContinuousClock.now + .seconds(60)
            while !fm.fileExists(atPath: portFile.path), ContinuousClock.now < deadline, process.isRunning {
                try await Task.sleep(for: .milliseconds(50))
            }
            kill(process.processIdentifier, SIGKILL)
            process.waitUntilExit()
            guard files.allSatisfy({ fm.fileExists(atPath: fresh.appendingPathComponent($0).path) }) else {
                try? fm.removeItem(at: fresh)
                throw Failure(description: "the fake API server made no certificates")
            }
            for name in ["port", "token", "openssl.cnf"] { try? fm.removeItem(at: fresh.appendingPathComponent(name)) }
            try? fm.removeItem(at: kept)
            // Another test run may have been quicker: then use its copy.
            if (try? fm.moveItem(at: fresh, to: kept)) == nil { try? fm.removeItem(at: fresh) }
            return kept
        }
    }

    private init(directory: URL, port: Int, controlPort: Int, process: Process) {
        self.directory = directory
        self.port = port
        self.controlPort = controlPort
        self.process = process
    }

    /// Starts a server holding `objects` (JSON), with BOOKMARKs every `bookmarkInterval` seconds.
    static func start(objects: String, bookmarkInterval: Double = 0.2) async throws -> FakeAPIServer {
        let fm = FileManager.default
        let directory = fm.temporaryDirectory.appendingPathComponent("kubesource-\(UUID().uuidString)")
        let certs = directory.appendingPathComponent("certs")
        try fm.createDirectory(at: certs, withIntermediateDirectories: true)
        let shared = try await sharedCerts.directory()
        for file in try fm.contentsOfDirectory(atPath: shared.path) {
            try fm.copyItem(at: shared.appendingPathComponent(file), to: certs.appendingPathComponent(file))
        }
        let objectsFile = directory.appendingPathComponent("objects.json")
        try objects.write(to: objectsFile, atomically: true, encoding: .utf8)
        let portFile = directory.appendingPathComponent("port")
        let controlFile = directory.appendingPathComponent("cport")
        let process = Process()
        process.executableURL = URL(fileURLWithPath: "/usr/bin/env")
        process.arguments = ["python3", root.appendingPathComponent("scripts/fake-apiserver/server.py").path,
                             "--cert-dir", certs.path, "--port-file", portFile.path, "--control-port-file", controlFile.path,
                             "--bookmark-interval", "\(bookmarkInterval)", "--load", objectsFile.path, "--quiet"]
        process.standardOutput = FileHandle.nullDevice
        process.standardError = FileHandle.nullDevice
        try process.run()
        let deadline = ContinuousClock.now + .seconds(30)
        // The port file is written last, after the control port's.
        while !fm.fileExists(atPath: portFile.path) {
            guard process.isRunning, ContinuousClock.now < deadline else {
                kill(process.processIdentifier, SIGKILL)
                process.waitUntilExit()
                try? fm.removeItem(at: directory)
                throw Failure(description: "the fake API server did not start")
            }
            try await Task.sleep(for: .milliseconds(20))
        }
        func number(_ url: URL) throws -> Int {
            guard let port = Int(try String(contentsOf: url, encoding: .utf8).trimmingCharacters(in: .whitespacesAndNewlines)) else {
                throw Failure(description: "bad port file \(url.path)")
            }
            return port
        }
        return FakeAPIServer(directory: directory, port: try number(portFile), controlPort: try number(controlFile), process: process)
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
    let server = try await FakeAPIServer.start(objects: objects, bookmarkInterval: bookmarkInterval)
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
