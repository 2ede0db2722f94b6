import Foundation

/// A fresh network namespace for one test, removed when the test's closure returns or throws.
/// Kernel tests never touch the namespace the test runner itself lives in.
struct Netns {
    let name: String

    static var isRoot: Bool { getuid() == 0 }

    static func with<T>(_ body: (Netns) throws -> T) throws -> T {
        let ns = Netns(name: "nftproxy-test-\(getpid())-\(UUID().uuidString.prefix(8))")
        let created = try run(["ip", "netns", "add", ns.name])
        guard created.status == 0 else { throw Failure("ip netns add failed: \(created.stderr)") }
        defer { _ = try? run(["ip", "netns", "delete", ns.name]) }
        return try body(ns)
    }

    /// Runs a command inside the namespace.
    func run(_ arguments: [String], input: String? = nil) throws -> Result {
        try Netns.run(["ip", "netns", "exec", name] + arguments, input: input)
    }

    struct Result {
        var status: Int32
        var stdout: String
        var stderr: String
    }

    struct Failure: Error, CustomStringConvertible {
        var description: String
        init(_ description: String) { self.description = description }
    }

    /// Output goes to temporary files, so a large listing can never fill a pipe and stall.
    static func run(_ arguments: [String], input: String? = nil) throws -> Result {
        let directory = FileManager.default.temporaryDirectory
        let outURL = directory.appendingPathComponent("nftproxy-out-\(UUID().uuidString)")
        let errURL = directory.appendingPathComponent("nftproxy-err-\(UUID().uuidString)")
        FileManager.default.createFile(atPath: outURL.path, contents: nil)
        FileManager.default.createFile(atPath: errURL.path, contents: nil)
        defer {
            try? FileManager.default.removeItem(at: outURL)
            try? FileManager.default.removeItem(at: errURL)
        }
        let process = Process()
        process.executableURL = URL(fileURLWithPath: "/usr/bin/env")
        process.arguments = arguments
        process.standardOutput = try FileHandle(forWritingTo: outURL)
        process.standardError = try FileHandle(forWritingTo: errURL)
        let inPipe = Pipe()
        process.standardInput = inPipe
        try process.run()
        if let input { inPipe.fileHandleForWriting.write(Data(input.utf8)) }
        try inPipe.fileHandleForWriting.close()
        process.waitUntilExit()
        return Result(status: process.terminationStatus,
                      stdout: (try? String(contentsOf: outURL, encoding: .utf8)) ?? "",
                      stderr: (try? String(contentsOf: errURL, encoding: .utf8)) ?? "")
    }
}

enum Paths {
    static let root = URL(fileURLWithPath: #filePath).deletingLastPathComponent().deletingLastPathComponent().deletingLastPathComponent()
    static let fixtures = root.appendingPathComponent("Tests/RuleCompilerTests/Fixtures")
    static let countSets = root.appendingPathComponent("scripts/nft-count-sets.py").path

    static var goldenFiles: [URL] {
        let cases = (try? FileManager.default.contentsOfDirectory(atPath: fixtures.path)) ?? []
        return cases.sorted().map { fixtures.appendingPathComponent($0).appendingPathComponent("expected.nft") }
            .filter { FileManager.default.fileExists(atPath: $0.path) }
    }
}
