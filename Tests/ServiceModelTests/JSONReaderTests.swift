import Foundation
import Testing
@testable import ServiceModel

/// The JSON reader against Yams: the same trees for the same text, and the same decoded states.
@Suite struct JSONReaderTests {
    /// JSON texts whose trees the two readers must agree on.
    static let battery: [String] = [
        #"{"a": "b"}"#,
        #"{"apiVersion":"v1","kind":"List","items":[{"kind":"Service"},{"kind":"Pod"}]}"#,
        #"{"s": "quote \" backslash \\ slash \/ b \b f \f n \n r \r t \t end"}"#,
        #"{"u": "\u00e9\u4E2D\u0041 \u0000 \u001f \u2028 \uFFFD"}"#,
        #"{"raw": "é 中 ✓ 😀", "é": "key"}"#,
        #"{"n": [0, -0, 1, -1, 1e5, 1E+5, 2e-5, 1.50, -0.0, 3.14159, 123456789012345678901234567890]}"#,
        #"{"b": [true, false, null], "t": true, "f": false, "z": null}"#,
        #"{"e": {}, "l": [], "nested": [[], [[]], {"x": {}}, [{}]]}"#,
        #"[1, "two", {"three": [3]}, "", null]"#,
        #"{"": "empty key", " ": "space key", "k": ""}"#,
        #"{"ab": 1, "ac": 2, "ab2": 3, "ba": 4, "b": {"ab": 5}}"#,
        #"{"looks like": ["1", "true", "null", "~", "-", "yes", "0x1F", "010", "1_000"]}"#,
        ##"{"yaml": ["# not a comment", "key: value", "- item", "&anchor", "*alias", "!tag", "%", "@", "`", "|", ">"]}"##,
        "\n\r\n  {  \"a\" :\n [ 1 ,\n 2 ] ,\"b\":{ } }  \n\n",
        "{\"tabs\":\t[\t1,\t2\t]\t}",
        #"{"long": ""# + String(repeating: "x", count: 5000) + #""}"#,
        String(repeating: "[", count: 200) + String(repeating: "]", count: 200),
        #"{"map": {"a": 1, "b": 2, "c": 3, "d": 4, "e": 5, "f": 6, "g": 7, "h": 8, "i": 9, "j": 10, "k": 11}}"#,
        """
        {
            "apiVersion": "v1",
            "items": [
                {"metadata": {"labels": {"app": "web", "version": 1.0}}, "spec": {"ports": [{"port": 80}]}}
            ],
            "kind": "List"
        }
        """,
    ]

    @Test(arguments: battery)
    func sameTreeAsYams(text: String) throws {
        let yams = try YAMLValue.documents(in: text)
        let json = try #require(JSONReader.read(text))
        #expect(try json.map { Self.tree(try $0.get()) } == yams.map(Self.tree))
    }

    /// Strings are scanned eight bytes at a time: quotes, escapes and non-ASCII text at every
    /// offset around that stride.
    @Test(arguments: 0..<18)
    func stringsOfEveryLength(length: Int) throws {
        let run = String(repeating: "x", count: length)
        let text = #"{"\#(run)": ["\#(run)", "\#(run)\"\#(run)", "\#(run)\\\#(run)\n", "\#(run)é\#(run)", "é\#(run)\u00e9"]}"#
        try sameTreeAsYams(text: text)
        let document = try #require(JSONReader.read(text)?.first).get()
        let keys = Field(document)
        #expect(try keys.keys() == [run])
        // Non-ASCII found at any offset: the keys then compare as strings, so these are one key.
        #expect(JSONReader.read("{\"\(run)\u{E9}\": 1, \"\(run)e\u{301}\": 2}") == nil)
        #expect(JSONReader.read("{\"\(run)\u{E9}\": 1, \"\(run)e\": 2}") != nil)
    }

    /// Keys compare as Swift strings: a decomposed "é" repeats a precomposed one, for Yams too.
    @Test func canonicallyEquivalentKeysAreDuplicates() throws {
        let text = "{\"\u{E9}\": 1, \"e\u{301}\": 2}"
        #expect(throws: (any Error).self) { try YAMLValue.documents(in: text) }
        #expect(JSONReader.read(text) == nil)
        let stream = try #require(JSONReader.read("{}\n" + text))
        guard case .failure(let error)? = stream.last else {
            Issue.record("no error")
            return
        }
        #expect(error.problem == "duplicate key \"e\u{301}\"")
    }

    /// Where YAML misreads JSON, the JSON reading wins.
    @Test func surrogatePairsAndLineSeparators() throws {
        // libyaml refuses an escaped surrogate; JSON spells characters past U+FFFF that way.
        #expect(throws: (any Error).self) { try YAMLValue.documents(in: #"{"s": "\ud83d\ude00"}"#) }
        #expect(try Self.only(#"{"s": "\ud83d\ude00 \uD834\uDD1E"}"#) == #"{"s"="😀 𝄞"}"#)
        // YAML folds a raw line or paragraph separator like a line break; in JSON it is a character.
        #expect(try Self.only("{\"s\": \"a\u{2028}b\u{2029}c\u{85}d\"}") == "{\"s\"=\"a\u{2028}b\u{2029}c\u{85}d\"}")
    }

    @Test(arguments: [
        (#"{"a": 1,"#, "line 1, column 9: expected a string key, found the end of the text"),
        ("{\"a\": 1\n \"b\": 2}", "line 2, column 2: expected ',' or '}', found '\"'"),
        (#"{"a" 1}"#, "line 1, column 6: expected ':' after a key, found '1'"),
        (#"{"a": [1 2]}"#, "line 1, column 10: expected ',' or ']', found '2'"),
        (#"{"a": tru}"#, "line 1, column 7: expected a value, found 't'"),
        (#"{"a": 01}"#, "line 1, column 8: expected ',' or '}', found '1'"),
        (#"{"a": -}"#, "line 1, column 8: expected a digit, found '}'"),
        (#"{"a": 1.}"#, "line 1, column 9: expected a digit after '.', found '}'"),
        (#"{"a": 1e}"#, "line 1, column 9: expected a digit in the exponent, found '}'"),
        (#"{"a": 'b'}"#, "line 1, column 7: expected a value, found '''"),
        (#"{a: 1}"#, "line 1, column 2: expected a string key, found 'a'"),
        (#"{"a": "b\x"}"#, "line 1, column 9: invalid escape '\\x'"),
        (#"{"a": "\u12G4"}"#, "line 1, column 8: invalid escape \\u12G4: \\u takes four hex digits"),
        (#"{"a": "\ud83d"}"#, "line 1, column 8: unpaired surrogate \\ud83d"),
        (#"{"a": "\ud83d\u0041"}"#, "line 1, column 8: unpaired surrogate \\ud83d"),
        (#"{"a": "\ude00"}"#, "line 1, column 8: unpaired surrogate \\ude00"),
        ("{\"a\": \"b\tc\"}", "line 1, column 9: control character U+0009 in a string: it must be escaped"),
        (#"{"a": "open}"#, "line 1, column 7: unterminated string"),
        (#"{"ab": 1, "ab": 2}"#, "line 1, column 11: duplicate key \"ab\""),
        (#"{"é": 1, "é": 2}"#, "line 1, column 10: duplicate key \"é\""),
        (#"{"a":1,"b":2,"c":3,"d":4,"e":5,"f":6,"g":7,"h":8,"i":9,"c":10}"#, "line 1, column 56: duplicate key \"c\""),
        ("{\"é\": \"ü\", \"x\": ?}", "line 1, column 17: expected a value, found '?'"),
        (String(repeating: "[", count: 513), "line 1, column 513: values nested deeper than 512 levels"),
    ])
    func syntaxErrorsNameLineAndColumn(text: String, message: String) throws {
        // Errors are reported from the second value on; a broken first value goes to the YAML reader.
        let documents = try #require(JSONReader.read("{}\n" + text))
        #expect(documents.count == 2)
        guard case .failure(let error)? = documents.last else {
            Issue.record("no error in \(text)")
            return
        }
        let standalone = JSONSyntaxError(line: error.line - 1, column: error.column, problem: error.problem)
        #expect(standalone.description == message)
        #expect(JSONReader.read(text) == nil)
    }

    @Test func notJSONIsLeftToYAML() {
        #expect(JSONReader.looksLikeJSON(" \n\t{\"a\": 1}"))
        #expect(JSONReader.looksLikeJSON("\u{FEFF}[1]"))
        #expect(!JSONReader.looksLikeJSON("# {\"a\": 1}"))
        #expect(!JSONReader.looksLikeJSON("---\n{\"a\": 1}"))
        #expect(!JSONReader.looksLikeJSON("\"a\""))
        // YAML flow style, a second YAML document, a comment: the YAML reader's business.
        #expect(JSONReader.read("{kind: List, items: []}") == nil)
        #expect(JSONReader.read("{\"a\": 1}\n---\n{\"b\": 2}") == nil)
        #expect(JSONReader.read("{\"a\": 1} # done") == nil)
        #expect(JSONReader.read("{\"a\": 1}: x") == nil)
        #expect(JSONReader.read("\u{FEFF}{\"a\": 1}").map { $0.count } == 1)
    }

    // MARK: Through the state decoder

    static let fixtures = URL(fileURLWithPath: #filePath).deletingLastPathComponent().deletingLastPathComponent()
        .appendingPathComponent("RuleCompilerTests/Fixtures")
    static let example = URL(fileURLWithPath: #filePath).deletingLastPathComponent().deletingLastPathComponent()
        .deletingLastPathComponent().appendingPathComponent("examples/cluster.yaml")

    static var stateFiles: [URL] {
        let cases = (try? FileManager.default.contentsOfDirectory(atPath: fixtures.path)) ?? []
        return cases.sorted().map { fixtures.appendingPathComponent($0).appendingPathComponent("state.yaml") }
            .filter { FileManager.default.fileExists(atPath: $0.path) } + [example]
    }

    @Test func everyFixtureIsFound() {
        #expect(Self.stateFiles.count > 20)
    }

    /// Each golden state as JSON: one object per line decodes as the YAML documents do (problems
    /// included), and a `kind: List` of them decodes as the YAML reader decodes the same JSON.
    @Test(arguments: stateFiles)
    func fixtureStatesDecodeTheSameFromJSON(file: URL) throws {
        let yaml = try String(contentsOf: file, encoding: .utf8)
        let documents = try YAMLDocument.split(yaml).flatMap { try YAMLValue.documents(in: $0.text) }
        let expected = StateDecoder.decode(yaml, source: "state")
        #expect(expected.services.count + expected.endpointSlices.count + expected.pods.count > 0)

        let lines = documents.map(Self.json).joined(separator: "\n")
        #expect(StateDecoder.decode(lines, source: "state") == expected)

        let list = #"{"apiVersion": "v1", "kind": "List", "items": ["# + documents.map(Self.json).joined(separator: ",\n") + "]}"
        let fast = StateDecoder.decode(list, source: "state")
        #expect(fast == StateDecoder.decodeYAML(list, source: "state"))
        #expect(fast.services == expected.services)
        #expect(fast.endpointSlices == expected.endpointSlices)
        #expect(fast.pods == expected.pods)
        #expect(fast.nodes == expected.nodes)
    }

    @Test func badObjectsAmongGoodOnesInAStream() throws {
        let text = """
            {"apiVersion": "v1", "kind": "Service", "metadata": {"name": "first"}, "spec": {"clusterIP": "10.96.0.1", "ports": [{"port": 80}]}}
            {"apiVersion": "v1", "kind": "Service", "metadata": {"name": "broken"} "spec": {}}
            {"apiVersion": "v1", "kind": "Service", "metadata": {"name": "bad-ip"}, "spec": {"clusterIP": "10.96.0.300", "ports": [{"port": 80}]}}
            {"apiVersion": "v1", "kind": "Service", "metadata": {"name": "open-string
            {"apiVersion": "v1", "kind": "Service", "metadata": {"name": "last"}, "spec": {"clusterIP": "10.96.0.2", "ports": [{"port": 80}]}}
            {
              "apiVersion": "v1", "kind": "Service",
              "metadata": {"name": "pretty"}, "spec": {"clusterIP": "10.96.0.3", "ports": [{"port": 80}]}
            }
            """
        let state = StateDecoder.decode(text, source: "s.json")
        #expect(state.services.map(\.name) == ["first", "last", "pretty"])
        #expect(state.problems.map(\.description) == [
            "skipped document (s.json, document 2): not valid JSON: line 2, column 72: expected ',' or '}', found '\"'",
            "skipped Service default/bad-ip (s.json, document 3): spec.clusterIP: \"10.96.0.300\" is not an IP address",
            "skipped document (s.json, document 4): not valid JSON: line 4, column 74: control character U+000A in a string: it must be escaped",
        ])
    }

    /// A single broken value is read again as YAML, whose message users already know.
    @Test func brokenSingleValueKeepsTheYAMLMessage() throws {
        let text = """
            {"apiVersion": "v1", "kind": "Service",
             "metadata": {"name": "x"}
             "spec": {}}
            """
        let state = StateDecoder.decode(text, source: "s.json")
        #expect(state.problems.count == 1)
        let message = try #require(state.problems.first?.message)
        #expect(message.hasPrefix("not valid YAML or JSON: line 3, column 2: did not find expected ',' or '}'"), "\(message)")
        #expect(state == StateDecoder.decodeYAML(text, source: "s.json"))
    }

    @Test func yamlFlowStyleAndJSONDocumentsStillDecode() {
        let flow = StateDecoder.decode(
            "{apiVersion: v1, kind: Service, metadata: {name: web}, spec: {clusterIP: 10.96.0.1, ports: [{port: 80}]}}",
            source: "s")
        #expect(flow.services.map(\.name) == ["web"])
        let documents = StateDecoder.decode("""
            {"apiVersion": "v1", "kind": "Service", "metadata": {"name": "a"}, "spec": {"clusterIP": "10.96.0.1", "ports": [{"port": 80}]}}
            ---
            apiVersion: v1
            kind: Service
            metadata: {name: b}
            spec: {clusterIP: 10.96.0.2, ports: [{port: 80}]}
            """, source: "s")
        #expect(documents.services.map(\.name) == ["a", "b"])
        #expect(documents.problems == [])
    }

    // MARK: Helpers

    /// A tree spelled out with every distinction the decoders make: quoted scalars in quotes.
    static func tree(_ value: YAMLValue) -> String {
        switch value.contents {
        case .scalar(let text, let quoted): quoted ? "\"\(text)\"" : text
        case .list(let items): "[" + items.map(tree).joined(separator: ", ") + "]"
        case .map(let entries): "{" + entries.map { "\($0.key.map { "\"\($0)\"" } ?? "nil")=\(tree($0.value))" }.joined(separator: ", ") + "}"
        }
    }

    static func only(_ text: String) throws -> String {
        let documents = try #require(JSONReader.read(text))
        try #require(documents.count == 1)
        return tree(try documents[0].get())
    }

    /// A tree as JSON text: plain scalars that JSON spells the same stay bare, others are strings.
    static func json(_ value: YAMLValue) -> String {
        switch value.contents {
        case .scalar(let text, let quoted):
            if Field(value).isAbsent { return "null" }
            if !quoted, ["true", "false"].contains(text) || isJSONNumber(text) { return text }
            return jsonString(text)
        case .list(let items):
            return "[" + items.map(json).joined(separator: ", ") + "]"
        case .map(let entries):
            return "{" + entries.map { "\(jsonString($0.key ?? "")): \(json($0.value))" }.joined(separator: ", ") + "}"
        }
    }

    static func isJSONNumber(_ text: String) -> Bool {
        text.wholeMatch(of: /-?(0|[1-9][0-9]*)(\.[0-9]+)?([eE][+-]?[0-9]+)?/) != nil
    }

    static func jsonString(_ text: String) -> String {
        var out = "\""
        for scalar in text.unicodeScalars {
            switch scalar {
            case "\"": out += "\\\""
            case "\\": out += "\\\\"
            case "\n": out += "\\n"
            case _ where scalar.value < 0x20: out += "\\u00" + (scalar.value < 0x10 ? "0" : "") + String(scalar.value, radix: 16)
            default: out.unicodeScalars.append(scalar)
            }
        }
        return out + "\""
    }
}
