// libFuzzer harness for the DNS decoder (placeholder until the codec lands).
@main struct Main { static func main() {} }
