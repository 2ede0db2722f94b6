import Foundation
@testable import KubeSource
import Testing

/// A temp dir with the fake API server's certificates and token, removed at the end.
private func withCerts<T>(_ body: (URL) throws -> T) async throws -> T {
    try await withFakeAPIServer(objects: "") { server in try body(URL(fileURLWithPath: server.certDirectory)) }
}

private func base64(_ url: URL) throws -> String { try Data(contentsOf: url).base64EncodedString() }

private func kubeconfig(cluster: String, user: String, context: String = "ctx", current: String = "ctx") -> String {
    """
    apiVersion: v1
    kind: Config
    current-context: \(current)
    contexts:
    - name: ctx
      context: {cluster: c1, user: u1}
    clusters:
    - name: c1
      cluster:
    \(cluster.split(separator: "\n").map { "    " + $0 }.joined(separator: "\n"))
    users:
    - name: u1
      user:
    \(user.split(separator: "\n").map { "    " + $0 }.joined(separator: "\n"))
    """
}

/// The error `body` throws; fails the test when it throws none.
private func configError(_ body: () throws(KubeConfigError) -> KubeConfig) -> KubeConfigError? {
    do {
        let config = try body()
        Issue.record("expected an error, got \(config)")
        return nil
    } catch {
        return error
    }
}

@Suite struct KubeConfigTests {
    @Test func dataFieldsAndServer() async throws {
        try await withCerts { certs in
            let text = kubeconfig(
                cluster: "server: https://10.0.0.1:6443/\ncertificate-authority-data: \(try base64(certs.appendingPathComponent("ca.crt")))",
                user: "client-certificate-data: \(try base64(certs.appendingPathComponent("client.crt")))\n"
                    + "client-key-data: \(try base64(certs.appendingPathComponent("client.key")))")
            let config = try KubeConfig.parse(text, path: "/etc/k/config")
            #expect(config.server == "https://10.0.0.1:6443")
            #expect(config.certificateAuthority?.bytes == Array(try Data(contentsOf: certs.appendingPathComponent("ca.crt"))))
            #expect(config.clientKey?.field == "users[u1].user.client-key-data")
            #expect(config.token == nil)
            #expect(!config.insecureSkipTLSVerify)
        }
    }

    @Test func relativeFilesAreReadFromTheKubeconfigsDirectory() async throws {
        try await withCerts { certs in
            let text = kubeconfig(cluster: "server: https://k:6443\ncertificate-authority: ca.crt\ninsecure-skip-tls-verify: false",
                                  user: "client-certificate: client.crt\nclient-key: \(certs.path)/client.key\ntokenFile: token")
            let config = try KubeConfig.parse(text, path: certs.appendingPathComponent("kubeconfig").path)
            #expect(config.certificateAuthority?.field == "clusters[c1].cluster.certificate-authority (\(certs.path)/ca.crt)")
            #expect(config.token == .file(certs.appendingPathComponent("token").path))
        }
    }

    @Test func errorsNameTheFileAndField() async throws {
        try await withCerts { certs in
            let missing = configError { () throws(KubeConfigError) in
                try KubeConfig.parse(kubeconfig(cluster: "server: https://k:6443", user: "client-certificate: nope.crt\nclient-key: nope.key"),
                                     path: "/etc/k/config")
            }
            #expect(missing?.description == "/etc/k/config: users[u1].user.client-certificate: file /etc/k/nope.crt does not exist")

            let badBase64 = configError { () throws(KubeConfigError) in
                try KubeConfig.parse(kubeconfig(cluster: "server: https://k:6443\ncertificate-authority-data: '%%%'", user: "token: t"),
                                     path: "/k")
            }
            #expect(badBase64?.field == "clusters[c1].cluster.certificate-authority-data")
            #expect(badBase64?.message == "is not valid base64")

            let notPEM = configError { () throws(KubeConfigError) in
                try KubeConfig.parse(kubeconfig(cluster: "server: https://k:6443\ncertificate-authority-data: \(Data("junk".utf8).base64EncodedString())",
                                                user: "token: t"), path: "/k")
            }
            #expect(notPEM?.field == "clusters[c1].cluster.certificate-authority-data")
            #expect(notPEM?.message.hasPrefix("not a PEM certificate") == true, "\(String(describing: notPEM))")

            let keyIsCert = configError { () throws(KubeConfigError) in
                try KubeConfig.parse(kubeconfig(cluster: "server: https://k:6443",
                                                user: "client-certificate: \(certs.path)/client.crt\nclient-key: \(certs.path)/client.crt"), path: "/k")
            }
            #expect(keyIsCert?.field == "users[u1].user.client-key (\(certs.path)/client.crt)")

            let noKey = configError { () throws(KubeConfigError) in
                try KubeConfig.parse(kubeconfig(cluster: "server: https://k:6443", user: "client-certificate: \(certs.path)/client.crt"), path: "/k")
            }
            #expect(noKey?.field == "users[u1].user.client-key")

            let context = configError { () throws(KubeConfigError) in
                try KubeConfig.parse(kubeconfig(cluster: "server: https://k:6443", user: "token: t", current: "prod"), path: "/k")
            }
            #expect(context?.description == "/k: current-context: names context \"prod\", which is not in contexts")

            let noServer = configError { () throws(KubeConfigError) in
                try KubeConfig.parse(kubeconfig(cluster: "insecure-skip-tls-verify: true", user: "token: t"), path: "/k")
            }
            #expect(noServer?.field == "clusters[c1].cluster.server")

            let exec = configError { () throws(KubeConfigError) in
                try KubeConfig.parse(kubeconfig(cluster: "server: https://k:6443", user: "exec:\n  command: aws"), path: "/k")
            }
            #expect(exec?.field == "users[u1].user.exec")

            let wrongType = configError { () throws(KubeConfigError) in
                try KubeConfig.parse(kubeconfig(cluster: "server: https://k:6443\ninsecure-skip-tls-verify: [1]", user: "token: t"), path: "/k")
            }
            #expect(wrongType?.field == "clusters[0].cluster.insecure-skip-tls-verify")

            let noFile = configError { () throws(KubeConfigError) in try KubeConfig.load(path: "/nonexistent/kubeconfig") }
            #expect(noFile?.description == "/nonexistent/kubeconfig: does not exist")
        }
    }

    @Test func inClusterConfig() async throws {
        try await withCerts { certs in
            let config = try KubeConfig.inCluster(
                environment: ["KUBERNETES_SERVICE_HOST": "fd00::1", "KUBERNETES_SERVICE_PORT": "443"], directory: certs.path)
            #expect(config.server == "https://[fd00::1]:443")
            #expect(config.token == .file(certs.appendingPathComponent("token").path))
            #expect(config.certificateAuthority?.field == certs.appendingPathComponent("ca.crt").path)

            let noHost = configError { () throws(KubeConfigError) in try KubeConfig.inCluster(environment: [:], directory: certs.path) }
            #expect(noHost?.field == "KUBERNETES_SERVICE_HOST")
            let noToken = configError { () throws(KubeConfigError) in
                try KubeConfig.inCluster(environment: ["KUBERNETES_SERVICE_HOST": "10.0.0.1", "KUBERNETES_SERVICE_PORT": "443"],
                                         directory: "/nonexistent/sa")
            }
            #expect(noToken?.description == "/nonexistent/sa/token: does not exist")
        }
    }

    @Test func resolvePrefersTheFlagThenKUBECONFIGThenInCluster() async throws {
        try await withCerts { certs in
            let file = certs.appendingPathComponent("kc").path
            try kubeconfig(cluster: "server: https://from-file:6443", user: "token: t").write(toFile: file, atomically: true, encoding: .utf8)
            let environment = ["KUBERNETES_SERVICE_HOST": "10.0.0.1", "KUBERNETES_SERVICE_PORT": "443"]
            #expect(try KubeConfig.resolve(kubeconfig: file, environment: environment).server == "https://from-file:6443")
            #expect(try KubeConfig.resolve(kubeconfig: nil, environment: environment.merging(["KUBECONFIG": "/none:\(file)"]) { $1 }).server
                == "https://from-file:6443")
            #expect(try KubeConfig.resolve(kubeconfig: nil, environment: environment, serviceAccountDirectory: certs.path).server
                == "https://10.0.0.1:443")
            #expect(try KubeConfig.resolve(kubeconfig: file, master: "https://master:1", environment: [:]).server == "https://master:1")
        }
    }

    @Test func tokenFileIsReadAgainWhenItChanges() throws {
        let dir = FileManager.default.temporaryDirectory.appendingPathComponent("token-\(UUID().uuidString)")
        try FileManager.default.createDirectory(at: dir, withIntermediateDirectories: true)
        defer { try? FileManager.default.removeItem(at: dir) }
        let path = dir.appendingPathComponent("token").path
        try "first\n".write(toFile: path, atomically: true, encoding: .utf8)
        let token = BearerToken(.file(path))
        #expect(try token.current() == "first")
        // Replaced by a rename, as the kubelet rotates a projected token.
        try "second\n".write(toFile: path, atomically: true, encoding: .utf8)
        #expect(try token.current() == "second")
        // A vanished file keeps the last token.
        try FileManager.default.removeItem(atPath: path)
        #expect(try token.current() == "second")
    }
}

@Suite struct JSONFramerTests {
    @Test func eventsSplitAcrossChunksAndSeveralInOneChunk() throws {
        let events = [
            #"{"type":"ADDED","object":{"metadata":{"name":"a {x}","resourceVersion":"1"}}}"#,
            #"{"type":"BOOKMARK","object":{"metadata":{"resourceVersion":"2","note":"quote \" and \\ and }"}}}"#,
            #"{"type":"DELETED","object":{"items":[1,[2,{"a":"]"}]]}}"#,
        ]
        let stream = Array((events.joined(separator: "\n") + "\n").utf8)
        // Every way of cutting the stream in two, and byte by byte, yields the same events.
        for cut in 0...stream.count {
            var framer = JSONFramer()
            let frames = try framer.append(stream[..<cut]) + framer.append(stream[cut...])
            #expect(frames.map { String(decoding: $0, as: UTF8.self) } == events, "cut at \(cut)")
        }
        var framer = JSONFramer()
        var frames: [[UInt8]] = []
        for byte in stream { frames += try framer.append([byte]) }
        #expect(frames.count == 3)
        #expect(framer.pending == 0)
        // Concatenated without newlines.
        var glued = JSONFramer()
        #expect(try glued.append(Array(events.joined().utf8)).count == 3)
    }

    @Test func garbageBetweenEventsIsAnError() {
        var framer = JSONFramer()
        #expect(throws: JSONFramer.FramingError.self) { try framer.append(Array("{\"a\":1}\nnull\n".utf8)) }
        var small = JSONFramer(maximumSize: 16)
        #expect(throws: JSONFramer.FramingError.self) { try small.append(Array("{\"a\":\"0123456789012345678\"".utf8)) }
    }

    @Test func jsonValueKeepsIntegersAndStrings() throws {
        let text = #"{"a":8080,"b":1.5,"c":true,"d":null,"e":"x/y","f":[1,"2"]}"#
        let value = try JSONDecoder().decode(JSONValue.self, from: Data(text.utf8))
        #expect(value.text == text)
        #expect(value["a"]?.integer == 8080)
    }

    @Test func backoffDoublesUpToTheCapWithJitter() {
        var backoff = Backoff(initial: .milliseconds(200), maximum: .seconds(10))
        let waits = (0..<10).map { _ in backoff.next() }
        #expect(waits[0] >= .milliseconds(100) && waits[0] <= .milliseconds(200))
        #expect(waits[3] >= .milliseconds(800) && waits[3] <= .milliseconds(1600))
        #expect(waits[9] >= .seconds(5) && waits[9] <= .seconds(10))
        backoff.reset()
        #expect(backoff.next() <= .milliseconds(200))
    }
}
