package main

// The `convert` verb: libcni's own conversion of a CNI result, the reference
// krafty's down- and up-conversion is compared with
// (plugins/krafty-tests/tests/conversion.rs).
//
//	cnidriver convert --to VERSION [--result FILE]
//
// reads a result (FILE, or stdin), decodes it in the version its cniVersion
// names (as libcni decodes a plugin's output), converts it with
// GetAsVersion(VERSION) and prints the converted result as libcni marshals
// it. libcni 1.1.2 knows results up to 1.0.0; asking for another version is
// libcni's own error, printed as the driver's code-999 error object.

import (
	"encoding/json"
	"flag"
	"io"
	"os"

	"github.com/containernetworking/cni/pkg/types/create"
)

const convertUsage = "usage: cnidriver convert --to VERSION [--result FILE]\n"

// runConvert executes the convert verb and returns the process exit status.
func runConvert(args []string, stdin io.Reader, stdout, stderr io.Writer) int {
	fs := flag.NewFlagSet("cnidriver convert", flag.ContinueOnError)
	fs.SetOutput(stderr)
	fs.Usage = func() { io.WriteString(stderr, convertUsage); fs.PrintDefaults() }
	to := fs.String("to", "", "the CNI version to convert the result to (required)")
	resultFile := fs.String("result", "", "the result to convert (default: stdin)")
	if err := fs.Parse(args); err != nil {
		return fail(stdout, stderr, driverError("%v", err))
	}
	if *to == "" || fs.NArg() > 0 {
		io.WriteString(stderr, convertUsage)
		return fail(stdout, stderr, driverError("convert takes --to VERSION and nothing else"))
	}
	out, err := convertResult(*resultFile, *to, stdin)
	if err != nil {
		return fail(stdout, stderr, err)
	}
	if _, err := stdout.Write(append(out, '\n')); err != nil {
		return fail(stdout, stderr, driverError("writing stdout: %v", err))
	}
	return 0
}

func convertResult(resultFile, to string, stdin io.Reader) ([]byte, error) {
	var input []byte
	var err error
	if resultFile == "" {
		input, err = io.ReadAll(stdin)
	} else {
		input, err = os.ReadFile(resultFile)
	}
	if err != nil {
		return nil, driverError("reading the result: %v", err)
	}
	result, err := create.CreateFromBytes(input)
	if err != nil {
		return nil, driverError("decoding the result: %v", err)
	}
	converted, err := result.GetAsVersion(to)
	if err != nil {
		return nil, driverError("converting the result to %s: %v", to, err)
	}
	out, err := json.Marshal(converted)
	if err != nil {
		return nil, driverError("encoding the result: %v", err)
	}
	return out, nil
}
