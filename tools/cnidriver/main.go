// Command cnidriver drives a CNI network configuration list through the real
// libcni (github.com/containernetworking/cni/libcni 1.1.2), the way container
// runtimes (containerd, CRI-O) and Multus do. It is test infrastructure for
// the krafty plugins: tests run it instead of hand-rolling CNI_* environments,
// so the plugins see exactly what a runtime would send them (name/cniVersion
// injection, prevResult chaining, result caching, runtimeConfig filtering by
// capability, CNI_ARGS as kubelet/CRI pass them).
//
// Usage:
//
//	cnidriver add|check|del|status|gc --conflist FILE | --conf FILE [flags]
//	cnidriver validate --conflist FILE | --conf FILE [--cni-path DIRS]
//	cnidriver version --plugin NAME [--cni-path DIRS]
//
// --conf takes a single network configuration (a `.conf`, one plugin, no
// "plugins" list) and runs it as runtimes and Multus run one: add, check and
// del through libcni's AddNetwork, CheckNetwork and DelNetwork; status and gc
// on the list libcni's ConfListFromConf makes of it (as libcni 1.2 does).
//
// validate is what podman and CRI-O do with every config they load:
// libcni's ValidateNetworkList (a conflist) or ValidateNetwork (a single
// .conf), which runs each plugin with CNI_COMMAND=VERSION and CNI_NETNS,
// CNI_IFNAME and CNI_PATH set to "dummy" and checks that the config's
// cniVersion is among the versions the plugin supports.
//
// stdout carries exactly one thing: the ADD result (add), nothing (other verbs
// on success), the VERSION reply (version), or on failure ONE JSON object
// {"code":N,"msg":"...","details":"..."} followed by exit status 1. Plugin
// errors keep the code/msg/details libcni reports; driver-side failures (bad
// flags, unreadable conflist, libcni errors that are not CNI errors such as
// "plugin not found") use code 999 with details == driverDetails.
// Diagnostics go to stderr.
//
// Build (offline, no modules): see scripts/build-cnidriver.sh.
package main

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"strings"
	"time"

	"github.com/containernetworking/cni/libcni"
	"github.com/containernetworking/cni/pkg/invoke"
	"github.com/containernetworking/cni/pkg/types"
	"github.com/containernetworking/cni/pkg/version"
)

// driverErrCode marks failures of the driver itself (as opposed to errors
// reported by a plugin). NB: it equals types.ErrInternal; see driverDetails.
const driverErrCode = 999

// driverDetails marks errors raised by the driver itself. It is needed
// because 999 is also types.ErrInternal, the code the Go skel library gives
// any untyped plugin error (e.g. "failed to open netns"), so the code alone
// does not tell a driver failure from a plugin failure.
const driverDetails = "cnidriver: driver-side failure, not a plugin error"

// driverError builds a code-999 error.
func driverError(format string, a ...interface{}) *types.Error {
	return &types.Error{Code: driverErrCode, Msg: fmt.Sprintf(format, a...), Details: driverDetails}
}

// gcAttachment mirrors types.GCAttachment from libcni >= 1.2 (absent in 1.1.2).
type gcAttachment struct {
	ContainerID string `json:"containerID"`
	IfName      string `json:"ifname"`
}

type options struct {
	verb             string
	conflist         string
	containerID      string
	netns            string
	ifname           string
	podNamespace     string
	podName          string
	podUID           string
	cniPath          []string
	cacheDir         string
	runtimeConfig    map[string]interface{}
	validAttachments []gcAttachment
	plugin           string
	timingFile       string
	conf             string
}

const usageText = `usage:
  cnidriver add|check|del --conflist FILE | --conf FILE --id ID [--netns PATH] [--ifname IF]
            [--pod-namespace NS] [--pod-name NAME] [--pod-uid UID]
            [--runtime-config JSON] [--cni-path DIRS] [--cache-dir DIR]
            [--timing FILE]
  cnidriver status --conflist FILE | --conf FILE [--cni-path DIRS]
  cnidriver gc --conflist FILE | --conf FILE [--valid-attachments JSON] [--cni-path DIRS]
  cnidriver validate --conflist FILE | --conf FILE [--cni-path DIRS]
  cnidriver version --plugin NAME [--cni-path DIRS]
`

func main() {
	if len(os.Args) > 1 && os.Args[1] == "convert" {
		os.Exit(runConvert(os.Args[2:], os.Stdin, os.Stdout, os.Stderr))
	}
	os.Exit(run(os.Args[1:], os.Stdout, os.Stderr))
}

// run executes one verb and returns the process exit status.
func run(args []string, stdout, stderr io.Writer) int {
	opts, err := parseArgs(args, stderr)
	if err != nil {
		if errors.Is(err, flag.ErrHelp) {
			return 0
		}
		return fail(stdout, stderr, err)
	}

	out, err := dispatch(context.Background(), opts)
	if err != nil {
		return fail(stdout, stderr, err)
	}
	if out != nil {
		if _, err := stdout.Write(append(out, '\n')); err != nil {
			fmt.Fprintf(stderr, "cnidriver: writing stdout: %v\n", err)
			return 1
		}
	}
	return 0
}

// fail prints err as a single CNI-style JSON error object on stdout and
// returns exit status 1. The full (possibly wrapped) error text goes to
// stderr, because libcni wraps plugin errors with context such as
// `plugin type="bridge" failed (add): ...` that is not part of the CNI error.
func fail(stdout, stderr io.Writer, err error) int {
	fmt.Fprintf(stderr, "cnidriver: %v\n", err)
	var cniErr *types.Error
	if !errors.As(err, &cniErr) {
		// Not a CNI error (e.g. plugin binary not found, result parsing
		// failure, CHECK refused by version): a driver-side failure.
		cniErr = &types.Error{Code: driverErrCode, Msg: err.Error(), Details: driverDetails}
	}
	// Note: when a plugin exits non-zero without JSON on stdout, libcni
	// (RawExec.pluginErr) synthesizes a types.Error with code 0 and the
	// plugin's stderr in msg; that is passed through unchanged.
	b, mErr := json.Marshal(struct {
		Code    uint   `json:"code"`
		Msg     string `json:"msg"`
		Details string `json:"details"`
	}{cniErr.Code, cniErr.Msg, cniErr.Details})
	if mErr != nil { // cannot happen for these field types
		b = []byte(`{"code":999,"msg":"cannot encode error","details":""}`)
	}
	fmt.Fprintln(stdout, string(b))
	return 1
}

// parseArgs parses `<verb> [flags]`. Flag errors are returned as driver
// errors; the flag package's own messages/usage go to stderr.
func parseArgs(args []string, stderr io.Writer) (*options, error) {
	if len(args) == 0 || strings.HasPrefix(args[0], "-") {
		if len(args) > 0 && (args[0] == "-h" || args[0] == "--help" || args[0] == "-help") {
			fmt.Fprint(stderr, usageText)
			return nil, flag.ErrHelp
		}
		fmt.Fprint(stderr, usageText)
		return nil, driverError("missing verb (add, check, del, status, gc, validate, version)")
	}
	o := &options{verb: args[0]}
	switch o.verb {
	case "add", "check", "del", "status", "gc", "validate", "version":
	default:
		fmt.Fprint(stderr, usageText)
		return nil, driverError("unknown verb %q (want add, check, del, status, gc, validate, version)", o.verb)
	}

	fs := flag.NewFlagSet("cnidriver "+o.verb, flag.ContinueOnError)
	fs.SetOutput(stderr)
	fs.Usage = func() { fmt.Fprint(stderr, usageText); fs.PrintDefaults() }
	fs.StringVar(&o.conflist, "conflist", "", "network configuration list file (required except for version)")
	fs.StringVar(&o.conf, "conf", "", "a single network configuration file, instead of --conflist")
	fs.StringVar(&o.containerID, "id", "", "container ID (CNI_CONTAINERID)")
	fs.StringVar(&o.netns, "netns", "", "network namespace path (CNI_NETNS)")
	fs.StringVar(&o.ifname, "ifname", "net1", "interface name inside the container (CNI_IFNAME)")
	fs.StringVar(&o.podNamespace, "pod-namespace", "", "K8S_POD_NAMESPACE passed in CNI_ARGS")
	fs.StringVar(&o.podName, "pod-name", "", "K8S_POD_NAME passed in CNI_ARGS")
	fs.StringVar(&o.podUID, "pod-uid", "", "K8S_POD_UID passed in CNI_ARGS")
	cniPath := fs.String("cni-path", os.Getenv("CNI_PATH"), "colon-separated plugin directories (default $CNI_PATH)")
	fs.StringVar(&o.cacheDir, "cache-dir", "", "libcni result cache directory (default "+libcni.CacheDir+")")
	runtimeConfig := fs.String("runtime-config", "", "JSON object of capability args (RuntimeConf.CapabilityArgs)")
	validAttachments := fs.String("valid-attachments", "[]", `gc: JSON list of {"containerID":..,"ifname":..}`)
	fs.StringVar(&o.plugin, "plugin", "", "version: plugin binary name to query")
	fs.StringVar(&o.timingFile, "timing", "", "add/check/del: append one JSON line of wall times (the libcni call, each plugin) to FILE")

	if err := fs.Parse(args[1:]); err != nil {
		if errors.Is(err, flag.ErrHelp) {
			return nil, err
		}
		return nil, driverError("%v", err)
	}
	if fs.NArg() > 0 {
		return nil, driverError("unexpected arguments: %q", fs.Args())
	}

	for _, dir := range strings.Split(*cniPath, string(os.PathListSeparator)) {
		if dir != "" {
			o.cniPath = append(o.cniPath, dir)
		}
	}
	if len(o.cniPath) == 0 {
		return nil, driverError("no plugin directories: pass --cni-path or set CNI_PATH")
	}

	if o.verb == "version" {
		if o.plugin == "" {
			return nil, driverError("version requires --plugin NAME")
		}
		return o, nil
	}
	if o.conflist != "" && o.conf != "" {
		return nil, driverError("%s takes --conflist or --conf, not both", o.verb)
	}
	if o.conflist == "" && o.conf == "" {
		return nil, driverError("%s requires --conflist FILE or --conf FILE", o.verb)
	}
	if o.verb == "validate" {
		return o, nil
	}
	if *runtimeConfig != "" {
		// A JSON object is required: libcni looks capabilities up by key.
		if err := json.Unmarshal([]byte(*runtimeConfig), &o.runtimeConfig); err != nil || o.runtimeConfig == nil {
			return nil, driverError("--runtime-config must be a JSON object: %v", err)
		}
	}
	// Default is an empty list (= no attachment is valid). It must not be
	// null: libcni's InjectConf rejects nil values.
	if err := json.Unmarshal([]byte(*validAttachments), &o.validAttachments); err != nil {
		return nil, driverError("--valid-attachments must be a JSON list of {\"containerID\",\"ifname\"}: %v", err)
	}
	if o.validAttachments == nil {
		o.validAttachments = []gcAttachment{}
	}
	return o, nil
}

// runtimeConf builds the libcni RuntimeConf, with CNI_ARGS as kubelet/CRI
// (containerd's go-cni, CRI-O's ocicni) send them: IgnoreUnknown=1 first so
// plugins that parse CNI_ARGS strictly accept the K8S_* keys, then the pod
// identity. Keys whose value is empty are omitted.
func (o *options) runtimeConf() *libcni.RuntimeConf {
	cniArgs := [][2]string{{"IgnoreUnknown", "1"}}
	for _, kv := range [][2]string{
		{"K8S_POD_NAMESPACE", o.podNamespace},
		{"K8S_POD_NAME", o.podName},
		{"K8S_POD_INFRA_CONTAINER_ID", o.containerID},
		{"K8S_POD_UID", o.podUID},
	} {
		if kv[1] != "" {
			cniArgs = append(cniArgs, kv)
		}
	}
	return &libcni.RuntimeConf{
		ContainerID:    o.containerID,
		NetNS:          o.netns,
		IfName:         o.ifname,
		Args:           cniArgs,
		CapabilityArgs: o.runtimeConfig,
	}
}

// dispatch runs the verb; the returned bytes (if any) go to stdout.
func dispatch(ctx context.Context, o *options) ([]byte, error) {
	// nil exec => libcni's default exec (invoke.RawExec): exactly what
	// runtimes use. Note it forwards plugin stderr only when the plugin
	// succeeds; on failure stderr is folded into msg only if stdout was empty.
	if o.verb == "validate" {
		return nil, validate(ctx, o)
	}
	var exec invoke.Exec
	var timed *timedExec
	if o.timingFile != "" {
		timed = &timedExec{inner: &invoke.DefaultExec{
			RawExec:       &invoke.RawExec{Stderr: os.Stderr},
			PluginDecoder: version.PluginDecoder{},
		}}
		exec = timed
	}
	cni := libcni.NewCNIConfigWithCacheDir(o.cniPath, o.cacheDir, exec)

	if o.verb == "version" {
		info, err := cni.GetVersionInfo(ctx, o.plugin)
		if err != nil {
			return nil, err
		}
		// libcni keeps only the supported versions; Encode re-emits them as
		// {"cniVersion":<libcni's current version>,"supportedVersions":[...]}.
		var buf bytes.Buffer
		if err := info.Encode(&buf); err != nil {
			return nil, driverError("encoding version info: %v", err)
		}
		return bytes.TrimSpace(buf.Bytes()), nil
	}

	run, err := verbRunner(ctx, cni, o)
	if err != nil {
		return nil, err
	}
	if timed != nil {
		switch o.verb {
		case "add", "check", "del":
		default:
			return nil, driverError("--timing applies to add, check and del only")
		}
		start := time.Now()
		out, err := run()
		if wErr := timed.write(o.timingFile, o.verb, time.Since(start)); wErr != nil && err == nil {
			err = wErr
		}
		return out, err
	}
	return run()
}

// verbRunner loads the conflist (or the single config) and returns what runs the verb on it.
func verbRunner(ctx context.Context, cni *libcni.CNIConfig, o *options) (func() ([]byte, error), error) {
	if o.conf == "" {
		list, err := libcni.ConfListFromFile(o.conflist)
		if err != nil {
			return nil, driverError("loading conflist %s: %v", o.conflist, err)
		}
		return func() ([]byte, error) { return runListVerb(ctx, cni, o, list) }, nil
	}
	conf, err := libcni.ConfFromFile(o.conf)
	if err != nil {
		return nil, driverError("loading config %s: %v", o.conf, err)
	}
	switch o.verb {
	case "add", "check", "del":
		return func() ([]byte, error) { return runConfVerb(ctx, cni, o, conf) }, nil
	}
	list, err := libcni.ConfListFromConf(conf)
	if err != nil {
		return nil, driverError("making a list of config %s: %v", o.conf, err)
	}
	return func() ([]byte, error) { return runListVerb(ctx, cni, o, list) }, nil
}

// runConfVerb runs add, check or del on a single config, as runtimes and Multus do.
func runConfVerb(ctx context.Context, cni *libcni.CNIConfig, o *options, conf *libcni.NetworkConfig) ([]byte, error) {
	switch o.verb {
	case "add":
		result, err := cni.AddNetwork(ctx, conf, o.runtimeConf())
		if err != nil {
			return nil, err
		}
		if result.Version() != conf.Network.CNIVersion {
			fmt.Fprintf(os.Stderr, "cnidriver: warning: result cniVersion %q != config cniVersion %q\n",
				result.Version(), conf.Network.CNIVersion)
		}
		return json.Marshal(result)
	case "check":
		return nil, cni.CheckNetwork(ctx, conf, o.runtimeConf())
	case "del":
		return nil, cni.DelNetwork(ctx, conf, o.runtimeConf())
	}
	return nil, driverError("unreachable verb %q", o.verb)
}

// runListVerb runs one verb on the conflist; the returned bytes (if any) go to stdout.
func runListVerb(ctx context.Context, cni *libcni.CNIConfig, o *options, list *libcni.NetworkConfigList) ([]byte, error) {
	switch o.verb {
	case "add":
		result, err := cni.AddNetworkList(ctx, list, o.runtimeConf())
		if err != nil {
			return nil, err
		}
		// Printed as libcni returns it (the last plugin's result, decoded in
		// the version that plugin reported), not converted. libcni 1.1.2
		// does not enforce that this equals the conflist's cniVersion, so
		// flag a mismatch on stderr rather than hide it.
		if result.Version() != list.CNIVersion {
			fmt.Fprintf(os.Stderr, "cnidriver: warning: result cniVersion %q != conflist cniVersion %q\n",
				result.Version(), list.CNIVersion)
		}
		return json.Marshal(result)
	case "check":
		// libcni refuses CHECK for cniVersion < 0.4.0 and silently skips
		// it when the list sets "disableCheck": true.
		return nil, cni.CheckNetworkList(ctx, list, o.runtimeConf())
	case "del":
		return nil, cni.DelNetworkList(ctx, list, o.runtimeConf())
	case "status":
		return nil, statusNetworkList(ctx, o, list)
	case "gc":
		return nil, gcNetworkList(ctx, o, list)
	}
	return nil, driverError("unreachable verb %q", o.verb)
}

// validate runs libcni's own config validation, as podman and CRI-O do on
// every config they load: ValidateNetworkList for a conflist, ValidateNetwork
// for a single config. libcni folds the plugins' errors into one untyped
// error; the first plugin error is kept so that its CNI code and message
// reach stdout, and libcni's whole verdict goes to stderr.
func validate(ctx context.Context, o *options) error {
	if o.timingFile != "" {
		return driverError("--timing applies to add, check and del only")
	}
	exec := &firstErrorExec{inner: &invoke.DefaultExec{
		RawExec:       &invoke.RawExec{Stderr: os.Stderr},
		PluginDecoder: version.PluginDecoder{},
	}}
	cni := libcni.NewCNIConfigWithCacheDir(o.cniPath, o.cacheDir, exec)
	var err error
	if o.conf != "" {
		conf, loadErr := libcni.ConfFromFile(o.conf)
		if loadErr != nil {
			return driverError("loading config %s: %v", o.conf, loadErr)
		}
		// The capabilities it returns are of no interest here.
		_, err = cni.ValidateNetwork(ctx, conf)
	} else {
		list, loadErr := libcni.ConfListFromFile(o.conflist)
		if loadErr != nil {
			return driverError("loading conflist %s: %v", o.conflist, loadErr)
		}
		_, err = cni.ValidateNetworkList(ctx, list)
	}
	if err == nil {
		return nil
	}
	var pluginErr *types.Error
	if errors.As(exec.first, &pluginErr) {
		fmt.Fprintf(os.Stderr, "cnidriver: libcni: %v\n", err)
		return pluginErr
	}
	return err
}

// firstErrorExec is libcni's default exec that remembers the first error a
// plugin run returned.
type firstErrorExec struct {
	inner invoke.Exec
	first error
}

func (f *firstErrorExec) ExecPlugin(ctx context.Context, pluginPath string, stdinData []byte, environ []string) ([]byte, error) {
	out, err := f.inner.ExecPlugin(ctx, pluginPath, stdinData, environ)
	if err != nil && f.first == nil {
		f.first = err
	}
	return out, err
}

func (f *firstErrorExec) FindInPath(plugin string, paths []string) (string, error) {
	return f.inner.FindInPath(plugin, paths)
}

func (f *firstErrorExec) Decode(jsonBytes []byte) (version.PluginInfo, error) {
	return f.inner.Decode(jsonBytes)
}

// requireV110 rejects STATUS/GC for lists older than CNI spec 1.1.0, where
// those verbs do not exist. (libcni 1.2 silently returns success instead; a
// test driver is more useful if it fails loudly.)
func requireV110(list *libcni.NetworkConfigList, verb string) error {
	ok, err := version.GreaterThanOrEqualTo(list.CNIVersion, "1.1.0")
	if err != nil {
		return driverError("conflist cniVersion %q: %v", list.CNIVersion, err)
	}
	if !ok {
		return driverError("%s requires a conflist with cniVersion 1.1.0, got %q", verb, list.CNIVersion)
	}
	return nil
}

// execNoResult runs one plugin for STATUS/GC. Per CNI spec 1.1.0 these verbs
// carry only CNI_COMMAND and CNI_PATH; invoke.Args.AsEnv also exports
// CNI_CONTAINERID/CNI_NETNS/CNI_IFNAME/CNI_ARGS, here as empty strings,
// which is identical to what libcni >= 1.2 does (c.args(verb, &RuntimeConf{})).
func execNoResult(ctx context.Context, o *options, verb string, conf *libcni.NetworkConfig) error {
	pluginPath, err := invoke.FindInPath(conf.Network.Type, o.cniPath)
	if err != nil {
		return err
	}
	args := &invoke.Args{
		Command: verb,
		Path:    strings.Join(o.cniPath, string(os.PathListSeparator)),
	}
	return invoke.ExecPluginWithoutResult(ctx, pluginPath, conf.Bytes, args, nil)
}

// statusNetworkList implements STATUS (absent from libcni 1.1.2) the way
// libcni 1.2 GetStatusNetworkList does: each plugin gets its own config with
// "name" and "cniVersion" injected from the list (no prevResult, no
// runtimeConfig), plugins run in list order, and the FIRST error stops the
// walk and is returned unwrapped so its code (e.g. 50/51) is preserved.
func statusNetworkList(ctx context.Context, o *options, list *libcni.NetworkConfigList) error {
	if err := requireV110(list, "status"); err != nil {
		return err
	}
	inject := map[string]interface{}{"name": list.Name, "cniVersion": list.CNIVersion}
	for _, plugin := range list.Plugins {
		conf, err := libcni.InjectConf(plugin, inject)
		if err != nil {
			return driverError("building STATUS config for plugin %s: %v", plugin.Network.Type, err)
		}
		if err := execNoResult(ctx, o, "STATUS", conf); err != nil {
			return err
		}
	}
	return nil
}

// gcNetworkList implements GC (absent from libcni 1.1.2) following CNI spec
// 1.1.0 and libcni 1.2 GCNetworkList: unless the list sets "disableGC": true,
// every plugin gets its config with "name", "cniVersion" and
// "cni.dev/valid-attachments" injected and is executed with CNI_COMMAND=GC.
// ALL plugins are tried even if one fails; the FIRST error is returned
// (later ones are logged to stderr), since GC is best-effort cleanup and one
// broken plugin must not block cleanup by the others.
//
// Like libcni 1.2 we also inject "cni.dev/attachments" (the key name an
// early draft of the 1.1.0 spec used, containernetworking/cni#1101), so the
// plugins see the same bytes a current runtime sends.
//
// Deliberately NOT done: libcni 1.2 first issues DEL for every attachment in
// its result cache that is not in the valid list. That would clean up the
// resources before the plugins' GC ever runs and hide GC bugs, so the driver
// only performs the plugin-level GC. Use `del` explicitly if needed.
func gcNetworkList(ctx context.Context, o *options, list *libcni.NetworkConfigList) error {
	if err := requireV110(list, "gc"); err != nil {
		return err
	}
	var raw map[string]interface{}
	if err := json.Unmarshal(list.Bytes, &raw); err != nil {
		return driverError("re-reading conflist: %v", err)
	}
	if disable, ok := raw["disableGC"].(bool); ok && disable {
		fmt.Fprintln(os.Stderr, "cnidriver: disableGC is set, not calling GC")
		return nil
	}

	inject := map[string]interface{}{
		"name":                      list.Name,
		"cniVersion":                list.CNIVersion,
		"cni.dev/valid-attachments": o.validAttachments,
		"cni.dev/attachments":       o.validAttachments,
	}
	var first error
	for _, plugin := range list.Plugins {
		conf, err := libcni.InjectConf(plugin, inject)
		if err == nil {
			err = execNoResult(ctx, o, "GC", conf)
		} else {
			err = driverError("building GC config for plugin %s: %v", plugin.Network.Type, err)
		}
		if err != nil {
			fmt.Fprintf(os.Stderr, "cnidriver: GC of plugin %s failed: %v\n", plugin.Network.Type, err)
			if first == nil {
				first = err
			}
		}
	}
	return first
}

// timedExec is libcni's default exec plus a stopwatch around each plugin run,
// for the benchmark (scripts/bench.sh): it tells how the time of a libcni
// call splits between the plugins of the chain, without the driver's own
// start-up, which a long-lived runtime does not pay per pod.
type timedExec struct {
	inner   invoke.Exec
	plugins []pluginTiming
}

type pluginTiming struct {
	Plugin  string `json:"plugin"`
	Command string `json:"command"`
	WallUs  int64  `json:"wallUs"`
}

func (t *timedExec) ExecPlugin(ctx context.Context, pluginPath string, stdinData []byte, environ []string) ([]byte, error) {
	command := ""
	for _, kv := range environ {
		if strings.HasPrefix(kv, "CNI_COMMAND=") {
			command = strings.TrimPrefix(kv, "CNI_COMMAND=")
		}
	}
	start := time.Now()
	out, err := t.inner.ExecPlugin(ctx, pluginPath, stdinData, environ)
	t.plugins = append(t.plugins, pluginTiming{filepath.Base(pluginPath), command, time.Since(start).Microseconds()})
	return out, err
}

func (t *timedExec) FindInPath(plugin string, paths []string) (string, error) {
	return t.inner.FindInPath(plugin, paths)
}

func (t *timedExec) Decode(jsonBytes []byte) (version.PluginInfo, error) {
	return t.inner.Decode(jsonBytes)
}

// write appends {"verb", "wallUs", "plugins": [...]} as one line to path.
func (t *timedExec) write(path, verb string, wall time.Duration) error {
	line, err := json.Marshal(struct {
		Verb    string         `json:"verb"`
		WallUs  int64          `json:"wallUs"`
		Plugins []pluginTiming `json:"plugins"`
	}{verb, wall.Microseconds(), t.plugins})
	if err != nil {
		return driverError("encoding timings: %v", err)
	}
	f, err := os.OpenFile(path, os.O_WRONLY|os.O_APPEND|os.O_CREATE, 0o644)
	if err != nil {
		return driverError("opening --timing file: %v", err)
	}
	defer f.Close()
	if _, err := f.Write(append(line, '\n')); err != nil {
		return driverError("writing --timing file: %v", err)
	}
	return nil
}
