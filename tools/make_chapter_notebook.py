"""Write notebooks/vgg.ipynb (cells only; run notebooks/execute.py to fill the outputs)."""
import nbformat
from nbformat.v4 import new_code_cell, new_markdown_cell, new_notebook

cells = [
    new_markdown_cell("""# VGG：用同一种积木搭出整个网络

这本笔记本陪读《动手学深度学习》（Gluon 版）里讲 VGG 的那一节。章节中出现的函数都由 `vgg` 包提供，
下面按章节的顺序逐段执行，笔记本里保存的是一次真实、完整的训练所产生的输出。

VGG 的设计只有一条规则：网络的主体由同一种"积木"重复组成，每块是几层 3×3 卷积，最后接一个 2×2 最大池化。
不必再为每一层挑选卷积核大小和步幅；每过一块，特征图边长缩小一半，通道数一般加倍。"""),
    new_code_cell("""import json
import os
import platform

# 测试时设置 VGG_QUICK=1：只用几百张图、小尺寸、训练 1 轮，几秒钟跑完整本笔记本。
QUICK = os.environ.get('VGG_QUICK') == '1'

# 先导入 vgg 再导入 mxnet：vgg 会在 MXNet 加载前把 OpenMP 线程数设为 CPU 核数。
from vgg import (VGG11, load_data_fashion_mnist, narrow, plot_history, show_predictions,
                 train, try_gpu, vgg, vgg_block)
import mxnet as mx
from mxnet import gluon, init, nd"""),
    new_markdown_cell("""## VGG 块

`vgg_block(num_convs, num_channels)` 由 `num_convs` 个 3×3 卷积层（四周各补 1 个像素，ReLU 激活）
和末尾一个 2×2、步幅为 2 的最大池化层组成。补边之后卷积的输出与输入一样大，所以整块的尺寸变化全部来自最后的池化：边长减半。
两层 3×3 卷积叠在一起，看到的输入范围与一层 5×5 卷积一样大，但权重只有 2×9=18 份而不是 25 份，中间还多了一次非线性，
这就是 VGG 只用小卷积核的理由。"""),
    new_code_cell("""blk = vgg_block(2, 128)
blk.initialize()
X = nd.random.uniform(shape=(2, 64, 16, 16))
print(blk(X).shape)  # 通道数变为 128，高和宽减半"""),
    new_markdown_cell("""## VGG 网络

`vgg(conv_arch, num_outputs)` 先按 `conv_arch` 依次堆 VGG 块（每一项是"卷积层数, 输出通道数"），
再接三层全连接：两层 4096 个单元、各带丢弃率 0.5 的丢弃层，最后是输出层，这一段沿用了上一节 AlexNet 的做法。
VGG-11 共 5 块、8 层卷积，再算上 3 层全连接正好 11 层，即论文表 1 的配置 A（`vgg.VGG11`）。"""),
    new_code_cell("""conv_arch = VGG11
print(conv_arch)
net = vgg(conv_arch, 1000)
net.initialize()
X = nd.random.uniform(shape=(1, 1, 224, 224))
for blk in net:
    X = blk(X)
    print(blk.name, 'output shape:\\t', X.shape)"""),
    new_markdown_cell("""边长依次是 224、112、56、28、14、7：五次池化，每次折半。卷积部分输出的 512 个 7×7 特征图展平成 25088 个数，
送进第一个全连接层，这一层的权重就有 25088×4096 ≈ 1.03 亿个，整个网络的参数大部分在这里。"""),
    new_markdown_cell("""## 训练模型

原样的 VGG-11 在 CPU 上训练太慢，所以章节把每块的通道数除以 `ratio = 4`，得到一个窄得多的网络：
每张图的乘加次数从约 75.5 亿降到约 5.1 亿（约 1/15；第一层只有 1 个输入通道，全连接层的 4096 个单元也没有缩小）。
图像放大到 224×224，批量大小 128，Xavier 初始化，学习率 0.05 的小批量随机梯度下降，这些都与书中相同。

这里与书中代码不同的地方：

* 训练 3 轮而不是书中的 5 轮，这样在 2 核 CPU 上一个半小时左右就能跑完；
* `narrow` 算通道数用的是 `int(c / ratio)`，对这几个配置与书中的 `c // ratio` 结果一样；
* `net.hybridize(...)` 把网络编译成静态计算图，数值上与逐层执行等价（只差浮点舍入），速度更快；
* `load_data_fashion_mnist` 一次缩放整批图像（双线性插值，与逐张缩放相差不到 1 个灰度级），`train` 的打印格式与 gluonbook 相同；
* `mx.random.seed(0)` 和 `seed=0` 固定初始化和打乱顺序，使这次运行可以复现，练习 2 也直接引用它作为 224×224 的那一组。"""),
    new_code_cell("""ratio = 4
small_conv_arch = narrow(conv_arch, ratio)  # 即 [(n, int(c / ratio)) for n, c in conv_arch]
print(small_conv_arch)
mx.random.seed(0)
net = vgg(small_conv_arch, 10)

lr, num_epochs, batch_size, resize, ctx = 0.05, 3, 128, 224, try_gpu()
max_samples = None
if QUICK:
    num_epochs, resize, max_samples = 1, 32, 384

net.initialize(init.Xavier(), ctx=ctx)
net.hybridize(static_alloc=True, static_shape=True)
trainer = gluon.Trainer(net.collect_params(), 'sgd', {'learning_rate': lr})
loss = gluon.loss.SoftmaxCrossEntropyLoss()
train_iter, test_iter = load_data_fashion_mnist(batch_size, resize=resize, max_samples=max_samples, seed=0)
history = train(train_iter, test_iter, net, loss, trainer, ctx, num_epochs)"""),
    new_code_cell("""# 记录这次运行所用的设备和每轮耗时（秒，含每轮之后的测试）
print('device:', ctx, '|', platform.processor() or platform.machine(), '|', os.cpu_count(), 'CPU cores')
print('resize:', resize, '| training images:', train_iter.num_examples)
for h in history:
    print('epoch %d: %.1f sec, %.1f training images/sec, test acc %.3f'
          % (h['epoch'], h['time'], h['images_per_sec'], h['test_acc']))
# 完整运行的结果另存一份，练习笔记本的练习 2 用它作为 224×224、3 轮的那一组
if not QUICK:
    os.makedirs('results', exist_ok=True)
    with open('results/chapter-run.json', 'w') as f:
        json.dump({'device': str(ctx), 'processor': platform.processor() or platform.machine(),
                   'cpu_count': os.cpu_count(), 'resize': resize, 'batch_size': batch_size,
                   'lr': lr, 'ratio': ratio, 'seed': 0, 'history': history}, f, indent=1)"""),
    new_markdown_cell("""上面保存的输出来自项目的 2 核 AMD EPYC CPU（只有 AVX2），没有 GPU。前两轮训练时机器上同时还在运行测试等其他任务，
所以偏慢；第 3 轮受干扰最少，约 31 分钟，更接近这台机器独占时的速度。有 GPU 时 `try_gpu()` 会自动选用它（本项目这次没有 GPU 可用，没有测过 GPU 上的耗时）。
训练进度条是 Jupyter 控件，只有在能显示控件的界面里（如 JupyterLab）才会显示最终进度；纯文本渲染下看到的是它刚创建时的 0%。"""),
    new_markdown_cell("""## 学习曲线与预测结果

左图画出每轮的平均训练损失，右图画出训练集和测试集上的准确率。再下面是测试集的前 18 张图，
标题第一行是网络的预测，第二行是真实类别；预测错了的，标题用红色。"""),
    new_code_cell("""fig = plot_history(history, title='VGG-11 (ratio %d) on Fashion-MNIST' % ratio)"""),
    new_code_cell("""X, y = next(iter(test_iter))
fig = show_predictions(net, X, y, num_rows=2, num_cols=9, ctx=ctx)"""),
    new_markdown_cell("""## 小结

* 一种积木（几层 3×3 卷积加一次 2×2 池化）重复使用，整个网络就能用一张 `conv_arch` 表写完；换一张表就是另一个深度（VGG-11/13/16/19）。
* 用几层小卷积代替一层大卷积：看到的范围相同，权重更少，非线性更多。
* 代价在于计算量和内存。同一目录下的 `vgg-exercises.ipynb` 用本机的实测数字把 VGG 和 AlexNet 放在一起比较。"""),
]

nb = new_notebook(cells=cells, metadata={
    'kernelspec': {'display_name': 'Python 3', 'language': 'python', 'name': 'python3'},
    'language_info': {'name': 'python'}})
nbformat.write(nb, 'notebooks/vgg.ipynb')
