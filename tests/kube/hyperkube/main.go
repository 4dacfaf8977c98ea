// Command hyperkube bundles the upstream Kubernetes control-plane and node
// components that the nettrace test bench needs into one binary, so their
// shared packages are compiled and linked once.
//
// The component is chosen by the name the binary is invoked as (for example a
// symlink called kubelet) or, failing that, by the first argument:
//
//	hyperkube kube-apiserver --version
//	ln -s hyperkube kubelet && ./kubelet --version
package main

import (
	"context"
	"fmt"
	"os"
	"path/filepath"
	"sort"
	"strings"

	"github.com/spf13/cobra"
	"k8s.io/component-base/cli"
	_ "k8s.io/component-base/logs/json/register"
	_ "k8s.io/component-base/metrics/prometheus/clientgo"
	_ "k8s.io/component-base/metrics/prometheus/version"

	apiserver "k8s.io/kubernetes/cmd/kube-apiserver/app"
	controllermanager "k8s.io/kubernetes/cmd/kube-controller-manager/app"
	proxy "k8s.io/kubernetes/cmd/kube-proxy/app"
	scheduler "k8s.io/kubernetes/cmd/kube-scheduler/app"
	kubelet "k8s.io/kubernetes/cmd/kubelet/app"

	_ "time/tzdata" // CronJob time zones, as upstream's controller-manager does
)

var components = map[string]func() *cobra.Command{
	"kube-apiserver":          apiserver.NewAPIServerCommand,
	"kube-controller-manager": controllermanager.NewControllerManagerCommand,
	"kube-scheduler":          func() *cobra.Command { return scheduler.NewSchedulerCommand() },
	"kubelet":                 func() *cobra.Command { return kubelet.NewKubeletCommand(context.Background()) },
	"kube-proxy":              proxy.NewProxyCommand,
}

func usage() {
	names := make([]string, 0, len(components))
	for n := range components {
		names = append(names, n)
	}
	sort.Strings(names)
	fmt.Fprintf(os.Stderr, "usage: hyperkube <%s> [flags]\n", strings.Join(names, "|"))
}

func main() {
	name := filepath.Base(os.Args[0])
	newCmd, ok := components[name]
	if !ok {
		if len(os.Args) < 2 {
			usage()
			os.Exit(2)
		}
		name = os.Args[1]
		newCmd, ok = components[name]
		if !ok {
			fmt.Fprintf(os.Stderr, "hyperkube: unknown component %q\n", name)
			usage()
			os.Exit(2)
		}
		// Drop the component name so the upstream command sees only its flags.
		os.Args = append([]string{name}, os.Args[2:]...)
	}
	os.Exit(cli.Run(newCmd()))
}
