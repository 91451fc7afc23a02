// The kubelet's own cAdvisor, alone: the cAdvisor library vendored in Kubernetes 1.20 (0.38.x),
// set up as pkg/kubelet/cadvisor/cadvisor_linux.go sets it up (housekeeping every 10 s, up to
// 15 s when dynamic, no event storage, a 2-minute stats cache, the kubelet's metric set) and
// served as pkg/kubelet/server/server.go serves /metrics/cadvisor (the same collectors, one
// sample per container, every cgroup from "/"). The reference of benches/cadvisor.sh, built
// there inside the Kubernetes source tree that tests/cluster/build.sh fetches.
package main

import (
	"flag"
	"log"
	"net/http"
	"time"

	"github.com/google/cadvisor/cache/memory"
	cadvisormetrics "github.com/google/cadvisor/container"
	_ "github.com/google/cadvisor/container/containerd/install"
	_ "github.com/google/cadvisor/container/crio/install"
	_ "github.com/google/cadvisor/container/systemd/install"
	v2 "github.com/google/cadvisor/info/v2"
	"github.com/google/cadvisor/manager"
	"github.com/google/cadvisor/metrics"
	"github.com/google/cadvisor/utils/sysfs"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/promhttp"
	"k8s.io/utils/clock"
	"k8s.io/utils/pointer"
)

func main() {
	listen := flag.String("listen", "127.0.0.1:19799", "address of /metrics")
	flag.Parse()
	// The kubelet's overrides of cAdvisor's flag defaults.
	for name, value := range map[string]string{
		"housekeeping_interval":     "10s",
		"event_storage_event_limit": "default=0",
		"event_storage_age_limit":   "default=0",
	} {
		if err := flag.Set(name, value); err != nil {
			log.Fatalf("cAdvisor flag %s: %v", name, err)
		}
	}
	kinds := []cadvisormetrics.MetricKind{
		cadvisormetrics.CpuUsageMetrics, cadvisormetrics.MemoryUsageMetrics,
		cadvisormetrics.CpuLoadMetrics, cadvisormetrics.DiskIOMetrics,
		cadvisormetrics.DiskUsageMetrics, cadvisormetrics.NetworkUsageMetrics,
		cadvisormetrics.AcceleratorUsageMetrics, cadvisormetrics.AppMetrics,
		cadvisormetrics.ProcessMetrics,
	}
	included := cadvisormetrics.MetricSet{}
	for _, k := range kinds {
		included.Add(k)
	}
	maxInterval := 15 * time.Second
	housekeeping := manager.HouskeepingConfig{Interval: &maxInterval, AllowDynamic: pointer.BoolPtr(true)}
	m, err := manager.New(memory.New(2*time.Minute, nil), sysfs.NewRealSysFs(), housekeeping,
		included, http.DefaultClient, []string{"/"}, "")
	if err != nil {
		log.Fatalf("cAdvisor manager: %v", err)
	}
	if err := m.Start(); err != nil {
		log.Fatalf("cAdvisor start: %v", err)
	}
	r := prometheus.NewRegistry()
	opts := v2.RequestOptions{IdType: v2.TypeName, Count: 1, Recursive: true}
	r.MustRegister(metrics.NewPrometheusCollector(m, metrics.DefaultContainerLabels, included, clock.RealClock{}, opts))
	r.MustRegister(metrics.NewPrometheusMachineCollector(m, included))
	http.Handle("/metrics", promhttp.HandlerFor(r, promhttp.HandlerOpts{ErrorHandling: promhttp.ContinueOnError}))
	log.Printf("serving http://%s/metrics", *listen)
	log.Fatal(http.ListenAndServe(*listen, nil))
}
